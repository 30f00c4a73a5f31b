"""Mixture data: the default synthetic set, users' arrays and CSV files, posteriordb's format."""

import json
import zipfile

import numpy as np
import pytest
import torch

from pyro_vi_zoo.data.dataset import Dataset
from pyro_vi_zoo.data.mixture import (
    default_mixture,
    load_mixture_data,
    load_posteriordb_mixture,
    mixture_from_array,
    mixture_from_csv,
    write_posteriordb_mixture,
)
from pyro_vi_zoo.errors import DataError


def test_default_mixture_is_fixed_and_matches_its_true_parameters():
    dataset = default_mixture()
    again = default_mixture()
    assert isinstance(dataset, Dataset)
    assert dataset.train[0].shape == (800, 2) and dataset.test[0].shape == (200, 2)
    assert torch.equal(dataset.train[0], again.train[0])
    truth = dataset.true_parameters
    points = torch.cat([dataset.train[0], dataset.test[0]]).numpy()
    labels = np.concatenate([dataset.train_labels, dataset.test_labels])
    assert abs(labels.mean() - 0.5) < 0.05
    for component in (0, 1):
        members = points[labels == component]
        assert np.allclose(members.mean(0), truth["locs"][component], atol=0.06)
        assert np.allclose(members.std(0), truth["scales"][component], rtol=0.12)


def test_train_labels_follow_the_split():
    dataset = default_mixture(num_points=200, test_fraction=0.25)
    train, labels = dataset.train[0].numpy(), dataset.train_labels
    assert len(labels) == 150 and len(dataset.test_labels) == 50
    assert train[labels == 1].mean(0) == pytest.approx([1.0, 1.0], abs=0.15)
    assert train[labels == 0].mean(0) == pytest.approx([0.0, 0.0], abs=0.15)


def test_user_array_and_csv_load_the_same_points(tmp_path):
    values = np.random.default_rng(0).normal(size=(30, 3))
    path = tmp_path / "points.csv"
    np.savetxt(path, values, delimiter=",", header="a,b,c", comments="")
    from_csv = mixture_from_csv(str(path), test_fraction=0.0)
    from_array = mixture_from_array(values, test_fraction=0.0)
    assert from_csv.test is None and from_csv.name == "points"
    assert torch.allclose(from_csv.train[0], from_array.train[0])
    assert sorted(from_array.train[0][:, 0].tolist()) == pytest.approx(sorted(values[:, 0].tolist()))
    assert load_mixture_data(str(path)).train[0].shape == (24, 3)
    assert load_mixture_data(torch.tensor(values)).test[0].shape == (6, 3)


@pytest.mark.parametrize(
    "values,words",
    [
        (np.zeros(10), r"2-D array \(n, d\).*reshape"),
        (np.array([[0.0, 1.0], [np.nan, 2.0], [1.0, 1.0]]), "NaN or infinite"),
        (np.zeros((0, 2)), "2 training rows|empty"),
        ([["a", "b"]], "numeric"),
    ],
)
def test_bad_arrays_raise_data_errors_that_name_the_fix(values, words):
    with pytest.raises(DataError, match=words):
        mixture_from_array(values)


def test_bad_csv_files_raise_data_errors(tmp_path):
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("1,2\n3\n")
    with pytest.raises(DataError, match="different lengths"):
        mixture_from_csv(str(ragged))
    text = tmp_path / "text.csv"
    text.write_text("x,y\n1,2\n3,oops\n")
    with pytest.raises(DataError, match="not a number"):
        mixture_from_csv(str(text))
    with pytest.raises(DataError, match="check the path"):
        mixture_from_csv(str(tmp_path / "missing.csv"))


def test_posteriordb_folder_round_trips(tmp_path):
    values = np.linspace(-3, 3, 25)
    draws = {"mu[1]": np.arange(10.0), "mu[2]": np.arange(10.0) + 1, "theta": np.full(10, 0.5)}
    folder = write_posteriordb_mixture(str(tmp_path / "gauss_mix"), values, draws, num_chains=3)
    with zipfile.ZipFile(f"{folder}/reference_draws.json.zip") as archive:
        chains = json.loads(archive.read(archive.namelist()[0]))
    assert len(chains) == 3 and sum(len(chain["mu[1]"]) for chain in chains) == 10
    dataset = load_posteriordb_mixture(folder)
    assert dataset.train[0].shape == (25, 1) and dataset.test is None
    assert dataset.train[0][:, 0].tolist() == pytest.approx(values.tolist())
    assert dataset.posteriordb is True
    assert dataset.reference_draws["mu[2]"].tolist() == (np.arange(10.0) + 1).tolist()
    assert load_mixture_data("posteriordb:" + folder).train[0].shape == (25, 1)
    assert load_mixture_data(folder).name == dataset.name


def test_posteriordb_errors_name_the_problem(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_posteriordb_mixture(str(tmp_path / "nowhere"))
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "data.json.zip").write_text("not a zip")
    with pytest.raises(DataError, match="zip file holding one JSON"):
        load_posteriordb_mixture(str(folder))
    write_posteriordb_mixture(str(folder), [0.0, np.nan, 1.0])
    with pytest.raises(DataError, match="NaN"):
        load_posteriordb_mixture(str(folder))
