"""The one shape every loader returns: model arguments for training and test, plus facts about the data."""

from dataclasses import dataclass, replace
from typing import Optional, Tuple

import numpy as np
import torch

from ..errors import DataError


@dataclass
class Dataset:
    """A data set ready for a model: its positional arguments for training and test.

    ``train`` and ``test`` are the model's positional arguments (observed values
    included), as tensors; ``test`` is ``None`` when there is no held-out split.
    What scoring and figures need besides (raw inputs, a target's scale, true
    parameters, labels) lives in typed fields of a subclass per kind of data:
    :class:`~pyro_vi_zoo.data.regression.RegressionDataset`,
    :class:`~pyro_vi_zoo.data.mixture.MixtureDataset`, and so on.
    """

    name: str
    train: Tuple[torch.Tensor, ...]
    test: Optional[Tuple[torch.Tensor, ...]] = None

    def to(self, device) -> "Dataset":
        """The same data set with its model arguments moved once to ``device`` (other fields stay as they are)."""
        move = lambda args: None if args is None else tuple(_to(a, device) for a in args)
        return replace(self, train=move(self.train), test=move(self.test))

    @property
    def num_train(self) -> int:
        return int(self.train[0].shape[0])

    @property
    def num_test(self) -> int:
        return 0 if self.test is None else int(self.test[0].shape[0])

    @property
    def device(self) -> torch.device:
        return self.train[0].device


def random_split(num_rows: int, test_fraction: float = 0.2, seed: int = 1996):
    """A seeded random partition of ``range(num_rows)``: ``(train_rows, test_rows)`` in shuffled order.

    Uses its own numpy generator, so the caller's random state is untouched.
    """
    if not 0.0 <= test_fraction < 1.0:
        raise DataError(f"test_fraction must lie in [0, 1), got {test_fraction}.")
    order = np.random.default_rng(seed).permutation(num_rows)
    num_test = int(round(test_fraction * num_rows))
    return order[num_test:], order[:num_test]


def _to(value, device):
    return value.to(device) if isinstance(value, torch.Tensor) else value


def as_float_array(values, name: str, ndim: Optional[int] = None) -> np.ndarray:
    """``values`` as a finite float64 numpy array, or a :class:`DataError` that says what is wrong."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise DataError(f"{name} must be numeric; could not convert it ({error}).") from None
    if ndim is not None and array.ndim != ndim:
        want = {1: "a 1-D array (n,)", 2: "a 2-D array (n, d)"}.get(ndim, f"{ndim}-D")
        raise DataError(f"{name} must be {want}, got shape {array.shape}; reshape it (e.g. x.reshape(-1, 1)).")
    bad = ~np.isfinite(array)
    if bad.any():
        where = np.argwhere(bad)[0].tolist()
        raise DataError(
            f"{name} holds {int(bad.sum())} NaN or infinite value(s) (first at index {where}); "
            "drop or impute those rows first."
        )
    if array.shape[0] == 0 if array.ndim else True:
        raise DataError(f"{name} is empty; pass at least one row.")
    return array
