"""Regression data: the embedded cubic set, feature maps, user arrays and CSV files, and their errors."""

import numpy as np
import pytest

from pyro_vi_zoo import DataError, load_dataset
from pyro_vi_zoo.errors import Note
from pyro_vi_zoo.data.regression import CUBIC_NOISE_SCALE, FeatureMap, cubic_arrays, regression_dataset


def test_cubic_default_is_the_documented_data():
    dataset = load_dataset("bayes_regression")
    assert dataset.num_train == 8000 and dataset.test[0].shape == (2000, 3)
    x, y = cubic_arrays()
    assert x[0] == -3.0 and x[-1] == 3.0 and len(x) == 10_000
    residual = y - (0.2 * x**3 - 2 * x**3 + 8 * x)
    assert residual.std() == pytest.approx(CUBIC_NOISE_SCALE, rel=0.03)
    features = dataset.train[0].numpy()
    assert np.allclose(features.mean(0), 0, atol=1e-5) and np.allclose(features.std(0), 1, atol=1e-4)
    assert dataset.noise_scale == pytest.approx(CUBIC_NOISE_SCALE / dataset.target_scale)


def test_feature_maps():
    x = np.array([1.0, 2.0, 3.0])
    assert FeatureMap("poly3").expand(x).tolist() == [[1, 1, 1], [2, 4, 8], [3, 9, 27]]
    assert FeatureMap("linear").expand(np.ones((3, 2))).shape == (3, 2)
    with pytest.raises(DataError, match="unknown feature map 'poly9'"):
        FeatureMap("poly9").fit(x)


def test_user_arrays_and_csv(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(50, 2)), rng.normal(size=50)
    dataset = load_dataset("bayes_regression", (x, y), features="linear")
    assert dataset.train[0].shape == (40, 2) and dataset.test[0].shape == (10, 2)
    path = tmp_path / "table.csv"
    path.write_text("a,b,name,target\n" + "\n".join(f"{i},{2 * i},row{i},{i % 3}" for i in range(20)))
    with pytest.warns(Note, match=r"left out the text column\(s\) 'name' of .*table.csv"):
        dataset = load_dataset("bayes_regression", str(path), target="target", features="linear")
    assert dataset.train[0].shape == (16, 2)  # the text column is left out, and says so
    assert dataset.feature_names == ("a", "b")


@pytest.mark.parametrize(
    "x, y, message",
    [
        (np.array([1.0, np.nan, 3.0, 4.0]), np.ones(4), "x holds 1 NaN or infinite value"),
        (np.ones(4), np.ones(5), "x has 4 rows but y has 5"),
        (np.ones(4), np.ones((4, 2)), "y must be 1-D"),
        (np.ones((4, 2, 2)), np.ones(4), "x must be 1-D"),
        (np.array(["a", "b", "c"]), np.ones(3), "x must be numeric"),
    ],
)
def test_bad_arrays_name_the_problem(x, y, message):
    with pytest.raises(DataError, match=message):
        regression_dataset(x, y)


def test_bad_csv_files_name_the_problem(tmp_path):
    with pytest.raises(DataError, match="does not exist; check the path given to --data"):
        load_dataset("bayes_regression", str(tmp_path / "missing.csv"), target="y")
    path = tmp_path / "t.csv"
    path.write_text("a,y\n1,2\n3,\n5,6\n7,8\n")
    with pytest.raises(DataError, match="target column 'y' .* NaN"):
        load_dataset("bayes_regression", str(path), target="y")
    with pytest.raises(DataError, match="target column 'z' is not in"):
        load_dataset("bayes_regression", str(path), target="z")
    with pytest.raises(DataError, match="name the target column with --target"):
        load_dataset("bayes_regression", str(path))
    typo = tmp_path / "typo.csv"
    typo.write_text("a,b,y\n1,2,3\n4,abc,6\n7,8,9\n")
    with pytest.raises(DataError, match="feature column 'b' of .* is not numeric: row 2 holds 'abc'"):
        load_dataset("bayes_regression", str(typo), target="y")
    header = tmp_path / "header.csv"
    header.write_text("a,y\n")
    with pytest.raises(DataError, match="has a header but no rows"):
        load_dataset("bayes_regression", str(header), target="y")
    with pytest.raises(DataError, match="is a folder; this model reads one CSV file"):
        load_dataset("bayes_regression", str(tmp_path), target="y")
    corrupt = tmp_path / "corrupt.csv"
    corrupt.write_bytes(b"\x00\xff\xfe garbage")
    with pytest.raises(DataError):
        load_dataset("bayes_regression", str(corrupt), target="y")
