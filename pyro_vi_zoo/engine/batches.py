"""Minibatch epochs for models that take their batch as arguments (local latents, rows of a matrix).

Each epoch visits the training rows in a fresh random order, in batches of a fixed size (the last
partial batch is dropped, so every step has the same shapes); the family's ``make_batch`` turns a
batch's row indices into the model's arguments (and may transform them, e.g. a fresh Bernoulli
binarisation of grey images each time they are used). The step copies each batch into the same
input tensors, so a step that is captured once can be replayed on every batch.

Data-parallel (:mod:`.distributed`), ``batch_size`` is the global batch: rank 0 draws each epoch's
order and broadcasts it, and replica ``rank`` of ``replicas`` takes its contiguous share of every
global batch, so the replicas together visit exactly the rows one process would.
"""

from dataclasses import dataclass
from typing import Any, Callable, Dict, Tuple

import torch

from ..errors import ZooError
from .distributed import World


@dataclass(frozen=True)
class EpochBatches:
    """Shuffled minibatch epochs over ``num_examples`` rows.

    ``make_batch(indices) -> (args, kwargs)`` gives the model's arguments for the rows
    ``indices`` (a LongTensor on ``device``). ``world`` is the replicas that share each global batch.
    """

    make_batch: Callable[[torch.Tensor], Tuple[Tuple, Dict[str, Any]]]
    num_examples: int
    batch_size: int
    device: torch.device
    world: World = World()

    def __post_init__(self):
        if self.batch_size < 1:
            raise ZooError(f"batch_size must be positive, got {self.batch_size}.")
        self.world.share(self.size, self.batch_size)

    @property
    def batches_per_epoch(self) -> int:
        return max(1, self.num_examples // self.batch_size)

    @property
    def size(self) -> int:
        """Rows in one global batch."""
        return min(self.batch_size, self.num_examples)

    @property
    def local_size(self) -> int:
        """Rows in this replica's share of a global batch."""
        return self.world.share(self.size)

    def feeder(self) -> "BatchFeeder":
        return BatchFeeder(self)


class BatchFeeder:
    """Gives step ``i`` its batch: a new permutation at the start of each epoch, then consecutive slices
    (this replica's share of each)."""

    def __init__(self, batches: EpochBatches):
        self.batches = batches
        self.order = None

    def batch(self, step: int) -> Tuple[Tuple, Dict[str, Any]]:
        position = step % self.batches.batches_per_epoch
        if position == 0 or self.order is None:
            order = torch.randperm(self.batches.num_examples, device=self.batches.device)
            self.order = self.batches.world.broadcast(order)
        start = position * self.batches.size + self.batches.world.rank * self.batches.local_size
        return self.batches.make_batch(self.order[start:start + self.batches.local_size])


def snapshot(values):
    """What :func:`copy_into` needs of the first batch to know a later batch's tensor unchanged: the tensor
    and its version counter (a tensor refilled in place is the same object with a newer version)."""
    pairs = enumerate(values) if isinstance(values, tuple) else values.items()
    taken = {key: (value, value._version) if isinstance(value, torch.Tensor) else None for key, value in pairs}
    return tuple(taken.values()) if isinstance(values, tuple) else taken


def copy_into(buffers, values, first=None) -> None:
    """Copy a batch's tensors into the step's input tensors (same shapes); other values must not change.

    A tensor that is the very object the first batch held, unmodified since (``first``, a :func:`snapshot`:
    the whole data set that every batch passes, say), is not copied again."""
    keys = range(len(buffers)) if isinstance(buffers, tuple) else list(buffers)
    for key in keys:
        buffer, value = buffers[key], values[key]
        if first is not None and first[key] is not None and value is first[key][0] and value._version == first[key][1]:
            continue
        if isinstance(buffer, torch.Tensor):
            if not isinstance(value, torch.Tensor) or value.shape != buffer.shape:
                shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
                raise ZooError(f"a batch's argument {key!r} is {shape}, where the first batch's was "
                               f"{tuple(buffer.shape)}; batches must keep their shapes (make_batch gets a fixed "
                               "number of rows: the last partial batch is dropped).")
            buffer.copy_(value)
        elif buffer != value:
            raise ZooError(f"a batch changed the non-tensor argument {buffer!r} to {value!r}; batches must keep "
                           "their shapes and sizes.")
