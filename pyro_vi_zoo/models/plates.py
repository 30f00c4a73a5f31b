"""The data plate the zoo's models share: its minibatch drawn by the plate itself, or chosen outside.

A model takes ``subsample_size`` (the plate draws that many rows at random each call, Pyro's usual
minibatching) or ``subsample`` (the rows' indices, chosen by a sampler outside the model: a
data-parallel replica's share of a shuffled global batch). Either way the plate scales the
likelihood by the data size over the minibatch's.
"""

from typing import Optional

import pyro
import torch


def minibatch_plate(size: int, subsample_size: Optional[int] = None, subsample: Optional[torch.Tensor] = None,
                    device=None) -> pyro.plate:
    """``pyro.plate("data", size)`` with the minibatch ``subsample`` (indices) or ``subsample_size``."""
    if subsample is not None:
        return pyro.plate("data", size, subsample=subsample, device=device)
    return pyro.plate("data", size, subsample_size=subsample_size, device=device)
