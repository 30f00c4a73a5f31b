"""Regression data: the embedded cubic toy set, users' own arrays and CSV tables, and feature maps.

The cubic set is the one of the classic variational-regression picture:
``y = 0.2 x³ − 2 x³ + 8 x + ε``, ``ε ~ N(0, 1.5²)``, x on an even grid over [−3, 3].
"""

import os
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch

from ..errors import DataError
from .dataset import Dataset, as_float_array

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
    """A random train/test partition of ``range(num_points)`` (numpy generator seeded with ``seed``)."""
    if not 0.0 <= test_fraction < 1.0:
        raise DataError(f"test_fraction must lie in [0, 1), got {test_fraction}.")
    order = np.random.default_rng(seed).permutation(num_points)
    num_test = int(round(test_fraction * num_points))
    return np.sort(order[num_test:]), np.sort(order[:num_test])


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


def regression_dataset(
    x,
    y,
    *,
    features: str = "poly3",
    test_fraction: float = 0.2,
    seed: int = 1996,
    name: str = "user",
    info: Optional[dict] = None,
    standardize_target: bool = True,
    dtype=torch.float32,
) -> Dataset:
    """A regression :class:`Dataset` from raw inputs ``x`` (n,) or (n, d) and targets ``y`` (n,).

    The model sees the standardised feature map of ``x`` and, with
    ``standardize_target``, targets standardised with training statistics (so
    unit-scale priors and step sizes suit any units); ``info`` keeps the raw
    inputs, the feature map and ``target_mean``/``target_scale``, so that scores
    and figures come back in original units.
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
    facts = {"x_train": x[train], "x_test": x[test], "feature_map": feature_map, "features": features,
             "target_mean": float(shift), "target_scale": float(scale)}
    facts.update(info or {})
    return Dataset(name=name, train=tensors(train), test=tensors(test) if len(test) else None, info=facts)


def cubic_dataset(features: str = "poly3", num_points: int = 10_000, seed: int = 1996) -> Dataset:
    """The embedded default: the cubic toy data, 80/20 split, with its true noise scale in ``info``.

    ``info["noise_scale"]`` is in the standardised target's units, as the model sees it.
    """
    x, y = cubic_arrays(num_points, seed)
    dataset = regression_dataset(x, y, features=features, seed=seed, name="cubic", info={"true_function": cubic_function})
    dataset.info["noise_scale"] = CUBIC_NOISE_SCALE / dataset.info["target_scale"]
    return dataset


def read_csv_table(path: str, target: Optional[str], feature_columns: Optional[Sequence[str]] = None):
    """Numeric feature columns and one target column of a CSV file, as ``(x, y, feature_names)``."""
    import pandas as pd

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
    names = list(feature_columns) if feature_columns else [c for c in table.columns if c != target]
    numeric = [c for c in names if pd.api.types.is_numeric_dtype(table[c])]
    if not numeric:
        raise DataError(f"{path!r} has no numeric feature columns besides {target!r}.")
    x = as_float_array(table[numeric].to_numpy(), f"feature columns of {path!r}", ndim=2)
    y = as_float_array(table[target].to_numpy(), f"target column {target!r} of {path!r}", ndim=1)
    return x, y, numeric
