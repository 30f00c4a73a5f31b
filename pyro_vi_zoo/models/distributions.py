"""Distributions the zoo's models need in a form a captured CUDA graph can hold.

A constant given as a Python number becomes a tensor each time a distribution is built
(``torch.tensor(0.0, device=...)``): on a GPU that is a copy from the host at every step, which
stalls an eager step and cannot be recorded in a CUDA graph. The models build their constants on the
data's device (buffers, ``x.new_full``); these classes do the same where torch's own do not.
"""

import numbers

import torch
from pyro import distributions as dist
from torch.distributions import TransformedDistribution
from torch.distributions.transforms import AbsTransform


def constant(like: torch.Tensor, value) -> torch.Tensor:
    """``value`` (a number, sequence or tensor) in ``like``'s dtype on its device: a number is filled in there
    (no copy from the host), a tensor already there is used as it is."""
    if isinstance(value, numbers.Number):
        return like.new_full((), value)
    return torch.as_tensor(value, dtype=like.dtype, device=like.device)


class HalfNormal(dist.HalfNormal):
    """Pyro's ``HalfNormal(scale)``, whose base ``Normal`` is centred on a zero made on ``scale``'s device
    (torch builds it from the number 0)."""

    def __init__(self, scale: torch.Tensor, validate_args=None):
        base_dist = dist.Normal(torch.zeros_like(scale), scale, validate_args=False)
        TransformedDistribution.__init__(self, base_dist, AbsTransform(), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        return super().expand(batch_shape, _instance=self._get_checked_instance(HalfNormal, _instance))
