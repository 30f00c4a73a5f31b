"""Data for Gaussian mixtures: the default synthetic mixture, users' (n, d) tables, posteriordb.

* :func:`default_mixture`: 1000 draws from
  0.5 N((0, 0), diag(0.25^2, 0.5^2)) + 0.5 N((1, 1), diag(0.25^2, 0.25^2)), fixed seed,
  split into training and held-out points; the true labels and parameters are kept
  so a fit can be scored against the truth.
* :func:`mixture_from_array` / :func:`mixture_from_csv`: any (n, d) table of numbers.
* :func:`load_posteriordb_mixture`: posteriordb's ``low_dim_gauss_mix`` posterior
  (Magnusson et al., "posteriordb: testing, benchmarking and developing Bayesian
  inference algorithms", 2023): a folder with ``data.json.zip`` (``{"N": n, "y": [...]}``)
  and ``reference_draws.json.zip`` (a list of chains, each ``{"mu[1]": [...], ...}``).
  The whole data set is the training set (the reference posterior conditions on all of it).
"""

import csv
import io
import json
import os
import zipfile
from dataclasses import dataclass, replace
from typing import Any, Dict, Optional

import numpy as np
import torch

from ..errors import DataError
from .dataset import Dataset, as_float_array, random_split

DEFAULT_WEIGHTS = (0.5, 0.5)
DEFAULT_LOCS = ((0.0, 0.0), (1.0, 1.0))
DEFAULT_SCALES = ((0.25, 0.5), (0.25, 0.25))
DEFAULT_SEED = 2017
POSTERIORDB_PREFIX = "posteriordb:"


@dataclass
class MixtureDataset(Dataset):
    """Points to cluster, ``train = test = (points,)``, and what is known of them.

    ``true_parameters`` (``weights``, ``locs``, ``scales``) and the labels exist for
    synthetic data; ``num_components`` is K when the data set knows it;
    ``posteriordb`` marks posteriordb's ``low_dim_gauss_mix`` (the model then takes
    the Stan model's priors) with its ``reference_draws`` (parameter name -> draws).
    """

    true_parameters: Optional[Dict[str, np.ndarray]] = None
    train_labels: Optional[np.ndarray] = None
    test_labels: Optional[np.ndarray] = None
    num_components: Optional[int] = None
    posteriordb: bool = False
    reference_draws: Optional[Dict[str, Any]] = None


def default_mixture_parameters() -> Dict[str, np.ndarray]:
    """The true ``weights`` (K,), ``locs`` (K, D) and ``scales`` (K, D) of the default mixture."""
    return {
        "weights": np.array(DEFAULT_WEIGHTS),
        "locs": np.array(DEFAULT_LOCS),
        "scales": np.array(DEFAULT_SCALES),
    }


def sample_mixture(weights, locs, scales, num_points, seed):
    """``num_points`` draws and their component labels from a diagonal Gaussian mixture (numpy, seeded)."""
    rng = np.random.default_rng(seed)
    labels = rng.choice(len(weights), size=num_points, p=np.asarray(weights))
    points = np.asarray(locs)[labels] + np.asarray(scales)[labels] * rng.standard_normal((num_points, len(locs[0])))
    return points, labels


def default_mixture(num_points=1000, test_fraction=0.2, seed=DEFAULT_SEED) -> MixtureDataset:
    """The default data set: ``num_points`` draws of the 2-D mixture above, split train/test."""
    truth = default_mixture_parameters()
    points, labels = sample_mixture(truth["weights"], truth["locs"], truth["scales"], num_points, seed)
    dataset = mixture_from_array(points, test_fraction=test_fraction, seed=seed, name="gmm_default")
    train_rows, test_rows = random_split(num_points, test_fraction, seed)
    return replace(dataset, true_parameters=truth, train_labels=labels[train_rows], test_labels=labels[test_rows],
                   num_components=len(truth["weights"]))


def mixture_from_array(values, *, test_fraction=0.2, seed=0, name="user_mixture") -> MixtureDataset:
    """An (n, d) array of numbers as a data set, shuffled with ``seed`` and split train/test.

    A 1-D array, NaN or infinite entries, or too few rows raise a :class:`DataError`
    that says how to fix them.
    """
    points = as_float_array(values, "mixture data", ndim=2)
    train_rows, test_rows = random_split(len(points), test_fraction, seed)
    if len(train_rows) < 2:
        raise DataError(f"mixture data needs at least 2 training rows, got {len(train_rows)}; pass more rows.")
    as_tensor = lambda rows: torch.as_tensor(points[rows], dtype=torch.get_default_dtype())
    return MixtureDataset(name, train=(as_tensor(train_rows),), test=(as_tensor(test_rows),) if len(test_rows) else None)


def mixture_from_csv(path, **split) -> MixtureDataset:
    """A CSV file of numbers (one row per point, optional header line) as a data set."""
    try:
        with open(path, newline="") as handle:
            text = handle.read()
    except OSError as error:
        raise DataError(f"cannot read mixture data {path!r} ({error.strerror}); check the path.") from None
    rows = [row for row in csv.reader(io.StringIO(text)) if row and any(cell.strip() for cell in row)]
    if rows and not _is_numeric_row(rows[0]):
        rows = rows[1:]
    if not rows:
        raise DataError(f"{path!r} holds no rows of numbers; write one point per line, columns separated by commas.")
    widths = {len(row) for row in rows}
    if len(widths) > 1:
        raise DataError(f"{path!r} has rows of different lengths {sorted(widths)}; every row needs the same columns.")
    values = _parse_rows(rows, path)
    name = os.path.splitext(os.path.basename(path))[0]
    return mixture_from_array(values, name=name, **split)


def _is_numeric_row(row):
    try:
        [float(cell) for cell in row]
    except ValueError:
        return False
    return True


def _parse_rows(rows, path):
    try:
        return np.array([[float(cell) for cell in row] for row in rows])
    except ValueError as error:
        raise DataError(f"{path!r} holds a value that is not a number ({error}); fix or drop that row.") from None


def load_posteriordb_mixture(folder) -> MixtureDataset:
    """posteriordb's low_dim_gauss_mix data and reference draws from ``folder``.

    ``reference_draws`` maps each parameter name (``mu[1]``, ``mu[2]``,
    ``sigma[1]``, ``sigma[2]``, ``theta``) to its draws, chains concatenated;
    ``posteriordb`` is True so the model is set up with the Stan
    model's priors (see ``/MODELS.md`` of posteriordb: ordered mu ~ Normal(0, 2),
    sigma ~ HalfNormal(2), theta ~ Beta(5, 5)).
    """
    if not os.path.isdir(folder):
        raise DataError(f"posteriordb folder {folder!r} does not exist; pass the folder holding data.json.zip.")
    record = _read_zipped_json(os.path.join(folder, "data.json.zip"))
    if not isinstance(record, dict) or "y" not in record:
        raise DataError(f"{folder}/data.json.zip must hold a JSON object with a list 'y' (and 'N').")
    values = as_float_array(record["y"], "posteriordb y", ndim=1)
    if "N" in record and int(record["N"]) != len(values):
        raise DataError(f"{folder}/data.json.zip says N = {record['N']} but holds {len(values)} values of y.")
    draws_path = os.path.join(folder, "reference_draws.json.zip")
    draws = read_posteriordb_draws(draws_path) if os.path.exists(draws_path) else None
    train = torch.as_tensor(values.reshape(-1, 1), dtype=torch.get_default_dtype())
    return MixtureDataset("posteriordb:" + os.path.basename(os.path.normpath(folder)), train=(train,), test=None,
                          num_components=2, posteriordb=True, reference_draws=draws)


def read_posteriordb_draws(path) -> Dict[str, np.ndarray]:
    """posteriordb reference draws (a list of chains of ``{name: [draws]}``), chains concatenated per name."""
    chains = _read_zipped_json(path)
    if not isinstance(chains, list) or not chains or not all(isinstance(chain, dict) for chain in chains):
        raise DataError(f"{path} must hold a JSON list of chains, each an object of parameter name -> draws.")
    names = list(chains[0])
    if any(list(chain) != names for chain in chains):
        raise DataError(f"{path}: the chains name different parameters; every chain needs the same names.")
    return {
        name: as_float_array(np.concatenate([chain[name] for chain in chains]), f"draws of {name}", ndim=1)
        for name in names
    }


def _read_zipped_json(path):
    try:
        with zipfile.ZipFile(path) as archive:
            members = [name for name in archive.namelist() if name.endswith(".json")]
            if len(members) != 1:
                raise DataError(f"{path} must hold exactly one .json file, found {members}.")
            return json.loads(archive.read(members[0]))
    except (OSError, zipfile.BadZipFile, json.JSONDecodeError) as error:
        raise DataError(f"cannot read {path} ({error}); it must be a zip file holding one JSON file.") from None


def write_posteriordb_mixture(folder, values, reference_draws: Optional[Dict[str, np.ndarray]] = None, num_chains=2):
    """Write ``values`` (and reference draws, split into ``num_chains`` chains) in posteriordb's format.

    The inverse of :func:`load_posteriordb_mixture`, for tests and for users' own references.
    """
    os.makedirs(folder, exist_ok=True)
    values = np.asarray(values, dtype=float).ravel()
    _write_zipped_json(os.path.join(folder, "data.json.zip"), "data.json", {"N": len(values), "y": values.tolist()})
    if reference_draws is not None:
        split = {name: np.array_split(np.asarray(draws, dtype=float), num_chains) for name, draws in reference_draws.items()}
        chains = [{name: parts[chain].tolist() for name, parts in split.items()} for chain in range(num_chains)]
        _write_zipped_json(os.path.join(folder, "reference_draws.json.zip"), "reference_draws.json", chains)
    return folder


def _write_zipped_json(path, member, content):
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(member, json.dumps(content))


def load_mixture_data(data=None, *, test_fraction=0.2, seed=None) -> Dataset:
    """Any mixture data set: ``None`` for the default; an array or tensor (n, d); a CSV
    path; a posteriordb folder, or ``"posteriordb:<folder>"``."""
    split = {"test_fraction": test_fraction} if seed is None else {"test_fraction": test_fraction, "seed": seed}
    if data is None:
        return default_mixture(**split)
    if isinstance(data, (str, os.PathLike)):
        path = os.fspath(data)
        if path.startswith(POSTERIORDB_PREFIX):
            return load_posteriordb_mixture(path[len(POSTERIORDB_PREFIX):])
        if os.path.isdir(path):
            return load_posteriordb_mixture(path)
        return mixture_from_csv(path, **split)
    return mixture_from_array(data, **split)
