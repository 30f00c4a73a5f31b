"""Regression data: the embedded cubic toy set, users' own arrays and CSV tables, and feature maps.

The cubic set is the one of the classic variational-regression picture:
``y = 0.2 x³ − 2 x³ + 8 x + ε``, ``ε ~ N(0, 1.5²)``, x on an even grid over [−3, 3].
The two cubic terms are the reference data's own formula (it reduces to
−1.8 x³ + 8 x); it is kept as written so the data match the published picture.
"""

import os
import warnings
from dataclasses import dataclass, replace
from typing import Callable, Optional, Sequence, Tuple

import numpy as np
import torch

from ..errors import DataError, Note
from .dataset import Dataset, as_float_array, random_split

CUBIC_NOISE_SCALE = 1.5
FEATURE_MAPS = ("linear", "poly2", "poly3", "poly4", "poly5")


def cubic_function(x):
    """The noise-free mean of the cubic toy data."""
    return 0.2 * x**3 - 2.0 * x**3 + 8.0 * x


def cubic_arrays(num_points: int = 10_000, seed: int = 1996, noise_scale: float = CUBIC_NOISE_SCALE):
    """Raw ``(x, y)`` of the cubic toy data, as float64 numpy arrays of shape ``(n,)``."""
    rng = np.random.default_rng(seed)
    x = np.linspace(-3.0, 3.0, num_points)
    y = cubic_function(x) + rng.normal(0.0, noise_scale, size=num_points)
    return x, y


def split_indices(num_points: int, test_fraction: float = 0.2, seed: int = 1996):
    """A random train/test partition of ``range(num_points)``, each part sorted."""
    train, test = random_split(num_points, test_fraction, seed)
    return np.sort(train), np.sort(test)


@dataclass
class FeatureMap:
    """A polynomial basis of the raw inputs, standardised with training statistics.

    ``kind`` is ``"linear"`` (the columns themselves) or ``"polyK"`` (every column
    raised to the powers 1..K, no cross terms). Standardising keeps the weights'
    posterior well conditioned, which matters for SVI's step sizes.
    """

    kind: str = "poly3"
    mean: Optional[np.ndarray] = None
    scale: Optional[np.ndarray] = None

    @property
    def degree(self) -> int:
        if self.kind not in FEATURE_MAPS:
            raise DataError(f"unknown feature map {self.kind!r}; choose one of: {', '.join(FEATURE_MAPS)}.")
        return 1 if self.kind == "linear" else int(self.kind[4:])

    def expand(self, x: np.ndarray) -> np.ndarray:
        x = x.reshape(len(x), -1)
        return np.concatenate([x**power for power in range(1, self.degree + 1)], axis=1)

    def fit(self, x: np.ndarray) -> "FeatureMap":
        raw = self.expand(x)
        self.mean = raw.mean(0)
        scale = raw.std(0)
        self.scale = np.where(scale > 0, scale, 1.0)
        return self

    def __call__(self, x) -> np.ndarray:
        return (self.expand(np.asarray(x, dtype=np.float64)) - self.mean) / self.scale


@dataclass
class RegressionDataset(Dataset):
    """A regression data set: ``train = test = (inputs, target)`` as the model sees them, plus what scores
    and figures need to come back in original units.

    ``x_train``/``x_test`` are the raw inputs before ``feature_map``; targets were
    standardised as ``(y − target_mean) / target_scale``; ``noise_scale`` is the known
    noise sd in the model's (standardised) units, when the data set knows it;
    ``split``/``num_splits`` name a benchmark split (UCI).
    """

    x_train: Optional[np.ndarray] = None
    x_test: Optional[np.ndarray] = None
    feature_map: Optional[Callable] = None
    feature_names: Tuple[str, ...] = ()
    target_mean: float = 0.0
    target_scale: float = 1.0
    noise_scale: Optional[float] = None
    true_function: Optional[Callable] = None
    split: Optional[int] = None
    num_splits: Optional[int] = None


def regression_dataset(
    x,
    y,
    *,
    features: str = "poly3",
    test_fraction: float = 0.2,
    seed: int = 1996,
    name: str = "user",
    feature_names: Sequence[str] = (),
    standardize_target: bool = True,
    dtype=torch.float32,
) -> RegressionDataset:
    """A :class:`RegressionDataset` from raw inputs ``x`` (n,) or (n, d) and targets ``y`` (n,).

    The model sees the standardised feature map of ``x`` and, with
    ``standardize_target``, targets standardised with training statistics (so
    unit-scale priors and step sizes suit any units); the raw inputs, the feature
    map and ``target_mean``/``target_scale`` are kept so that scores and figures
    come back in original units.
    """
    x = as_float_array(x, "x")
    y = as_float_array(y, "y")
    if x.ndim not in (1, 2):
        raise DataError(f"x must be 1-D (n,) or 2-D (n, d), got shape {x.shape}.")
    if y.ndim != 1:
        raise DataError(f"y must be 1-D (n,), got shape {y.shape}; pass a single target column.")
    if len(x) != len(y):
        raise DataError(f"x has {len(x)} rows but y has {len(y)}; they must match row for row.")
    if len(y) < 3:
        raise DataError(f"need at least 3 rows to fit and test a regression, got {len(y)}.")
    train, test = split_indices(len(y), test_fraction, seed)
    feature_map = FeatureMap(features).fit(x[train])
    shift, scale = (y[train].mean(), y[train].std()) if standardize_target else (0.0, 1.0)
    scale = scale if scale > 0 else 1.0
    as_tensor = lambda a: torch.as_tensor(a, dtype=dtype)
    tensors = lambda idx: (as_tensor(feature_map(x[idx])), as_tensor((y[idx] - shift) / scale))
    return RegressionDataset(name=name, train=tensors(train), test=tensors(test) if len(test) else None,
                             x_train=x[train], x_test=x[test], feature_map=feature_map,
                             feature_names=tuple(feature_names), target_mean=float(shift), target_scale=float(scale))


def cubic_dataset(features: str = "poly3", num_points: int = 10_000, seed: int = 1996) -> RegressionDataset:
    """The embedded default: the cubic toy data, 80/20 split, with its true function and noise scale
    (``noise_scale`` in the standardised target's units, as the model sees it)."""
    x, y = cubic_arrays(num_points, seed)
    dataset = regression_dataset(x, y, features=features, seed=seed, name="cubic")
    return replace(dataset, true_function=cubic_function, noise_scale=CUBIC_NOISE_SCALE / dataset.target_scale)


def read_csv_table(path: str, target: Optional[str], feature_columns: Optional[Sequence[str]] = None):
    """Numeric feature columns and one target column of a CSV file, as ``(x, y, feature_names)``."""
    import pandas as pd

    if os.path.isdir(path):
        raise DataError(f"--data {path!r} is a folder; this model reads one CSV file: pass its path.")
    if not os.path.isfile(path):
        raise DataError(f"data file {path!r} does not exist; check the path given to --data.")
    try:
        table = pd.read_csv(path)
    except Exception as error:  # pandas raises many types for unreadable files
        raise DataError(f"could not read {path!r} as CSV ({error}); pass a comma-separated file with a header row.") from None
    if target is None:
        raise DataError(f"name the target column with --target (columns: {', '.join(map(str, table.columns))}).")
    if target not in table.columns:
        raise DataError(f"target column {target!r} is not in {path!r}; its columns are: {', '.join(map(str, table.columns))}.")
    if table.empty:
        raise DataError(f"{path!r} has a header but no rows; pass a file with one example per row.")
    names = list(feature_columns) if feature_columns else [c for c in table.columns if c != target]
    text = []
    for column in names:
        if pd.api.types.is_numeric_dtype(table[column]) or pd.api.types.is_bool_dtype(table[column]):
            continue
        numbers = pd.to_numeric(table[column], errors="coerce")
        if numbers.notna().any():  # mostly numbers: a typo, not a column of names
            row = int((numbers.isna() & table[column].notna()).to_numpy().argmax())
            raise DataError(f"feature column {column!r} of {path!r} is not numeric: row {row + 1} holds "
                            f"{table[column].iloc[row]!r}; correct it, or remove the column.")
        text.append(column)
    if text:
        warnings.warn(f"left out the text column(s) {', '.join(map(repr, text))} of {path!r} (no numbers in them)", Note)
    numeric = [column for column in names if column not in text]
    if not numeric:
        raise DataError(f"{path!r} has no numeric feature columns besides {target!r}.")
    x = as_float_array(table[numeric].to_numpy(dtype=float), f"feature columns of {path!r}", ndim=2)
    y = as_float_array(table[target].to_numpy(), f"target column {target!r} of {path!r}", ndim=1)
    return x, y, numeric
