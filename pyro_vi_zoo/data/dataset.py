"""The one shape every loader returns: model arguments for training and test, plus facts about the data."""

from dataclasses import dataclass, field, replace
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch

from ..errors import DataError


@dataclass
class Dataset:
    """A data set ready for a model.

    ``train`` and ``test`` are the model's positional arguments (observed values
    included), as tensors; ``test`` is ``None`` when there is no held-out split.
    ``info`` holds what evaluation and figures need and the model does not: the raw
    inputs before a feature map, the true parameters of synthetic data, the
    target's scale for reporting in original units, and so on.
    """

    name: str
    train: Tuple[torch.Tensor, ...]
    test: Optional[Tuple[torch.Tensor, ...]] = None
    info: Dict[str, Any] = field(default_factory=dict)

    def to(self, device) -> "Dataset":
        """The same data set with every tensor moved once to ``device``."""
        move = lambda args: None if args is None else tuple(_to(a, device) for a in args)
        return replace(self, train=move(self.train), test=move(self.test))

    @property
    def num_train(self) -> int:
        return int(self.train[0].shape[0])


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
