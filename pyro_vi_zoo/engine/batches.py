"""Minibatch epochs for models that take their batch as arguments (local latents, rows of a matrix).

Each epoch visits the training rows in a fresh random order, in batches of a fixed size (the last
partial batch is dropped, so every step has the same shapes); the family's ``make_batch`` turns a
batch's row indices into the model's arguments (and may transform them, e.g. a fresh Bernoulli
binarisation of grey images each time they are used). The step copies each batch into the same
input tensors, so a step that is captured once can be replayed on every batch.
"""

from dataclasses import dataclass
from typing import Any, Callable, Dict, Tuple

import torch

from ..errors import ZooError


@dataclass(frozen=True)
class EpochBatches:
    """Shuffled minibatch epochs over ``num_examples`` rows.

    ``make_batch(indices) -> (args, kwargs)`` gives the model's arguments for the rows
    ``indices`` (a LongTensor on ``device``).
    """

    make_batch: Callable[[torch.Tensor], Tuple[Tuple, Dict[str, Any]]]
    num_examples: int
    batch_size: int
    device: torch.device

    def __post_init__(self):
        if self.batch_size < 1:
            raise ZooError(f"batch_size must be positive, got {self.batch_size}.")

    @property
    def batches_per_epoch(self) -> int:
        return max(1, self.num_examples // self.batch_size)

    @property
    def size(self) -> int:
        return min(self.batch_size, self.num_examples)

    def feeder(self) -> "BatchFeeder":
        return BatchFeeder(self)


class BatchFeeder:
    """Gives step ``i`` its batch: a new permutation at the start of each epoch, then consecutive slices."""

    def __init__(self, batches: EpochBatches):
        self.batches = batches
        self.order = None

    def batch(self, step: int) -> Tuple[Tuple, Dict[str, Any]]:
        position = step % self.batches.batches_per_epoch
        if position == 0 or self.order is None:
            self.order = torch.randperm(self.batches.num_examples, device=self.batches.device)
        size = self.batches.size
        return self.batches.make_batch(self.order[position * size:(position + 1) * size])


def copy_into(buffers, values) -> None:
    """Copy a batch's tensors into the step's input tensors (same shapes); other values must not change."""
    pairs = zip(buffers, values) if isinstance(buffers, tuple) else ((buffers[k], values[k]) for k in buffers)
    for buffer, value in pairs:
        if isinstance(buffer, torch.Tensor):
            buffer.copy_(value)
        elif buffer != value:
            raise ZooError(f"a batch changed the non-tensor argument {buffer!r} to {value!r}; batches must keep "
                           "their shapes and sizes.")
