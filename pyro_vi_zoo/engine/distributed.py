"""Data-parallel SVI on torch.distributed: the same fit on several processes or GPUs, launched by torchrun.

Each process (a *replica*) holds the whole model and guide and draws its own part of every global
minibatch; after each backward pass the replicas average their gradients (and losses) with one
all-reduce, so every replica takes the same optimiser step and the parameters stay identical. A
replica's model scales its likelihood by N / its own batch; averaging over the replicas turns that
into N / global batch on the sum over the global batch, the single-process estimator.

What makes the replicas agree, and where it happens:

* the parameters: made by the warm-up call on every replica from the same seed, then broadcast
  from rank 0 (:meth:`World.synchronise`), before the first step;
* the batches: rank 0 draws each epoch's order and broadcasts it; every replica takes its slice of
  the global batch (:class:`~pyro_vi_zoo.engine.batches.BatchFeeder`);
* the Monte Carlo noise: different on purpose, each replica reseeded from the run's seed and its rank.

Nothing here starts processes: ``torchrun`` does, and :func:`launch` joins the process group its
environment describes (gloo on the CPU, NCCL on CUDA, one GPU per local rank). A process group the
user made beforehand is used as it is. Outside torchrun everything below is a no-op for one replica.
"""

import contextlib
import datetime
import os
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence

import numpy as np
import pyro
import torch
import torch.distributed as dist

from ..errors import ZooError

DEFAULT_TIMEOUT_S = 600
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


class DistributedError(RuntimeError):
    """A replica waited for the others past the process group's timeout (one died or hung), or the group failed."""


@dataclass(frozen=True)
class World:
    """This process's place among the replicas: ``rank`` of ``size`` (``size`` 1: no data parallelism)."""

    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the replica that prints, draws progress bars and writes the run folder."""
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.size > 1

    def share(self, global_batch: int, asked: Optional[int] = None) -> int:
        """Rows of each replica's share of a global batch (``asked`` rows, capped at the training set's size);
        a :class:`ZooError` when it does not split evenly."""
        if global_batch % self.size:
            capped = (f" (--batch-size {asked} capped at the {global_batch} training rows)"
                      if asked is not None and asked != global_batch else "")
            raise ZooError(f"the global batch of {global_batch} rows{capped} does not split evenly over {self.size} "
                           f"processes; use a --batch-size that is a multiple of {self.size}"
                           + (f" and at most {global_batch}." if capped else "."))
        return global_batch // self.size

    def average(self, tensors: Sequence[torch.Tensor]) -> None:
        """Replace every tensor by its mean over the replicas, in place (one all-reduce per dtype)."""
        if not self.parallel:
            return
        by_dtype = {}
        for tensor in tensors:
            by_dtype.setdefault(tensor.dtype, []).append(tensor)
        for group in by_dtype.values():
            flat = torch.cat([t.reshape(-1) for t in group])
            with _collective("averaging gradients"):
                dist.all_reduce(flat)
            flat.div_(self.size)
            for tensor, chunk in zip(group, flat.split([t.numel() for t in group])):
                tensor.copy_(chunk.view_as(tensor))

    def broadcast(self, tensor: torch.Tensor) -> torch.Tensor:
        """Rank 0's ``tensor`` on every replica (in place; returned for convenience)."""
        if self.parallel:
            with _collective("receiving rank 0's tensors"):
                dist.broadcast(tensor, src=0)
        return tensor

    def broadcast_object(self, value: Any) -> Any:
        """Rank 0's ``value`` (any picklable object) on every replica."""
        if not self.parallel:
            return value
        box = [value]
        with _collective("receiving rank 0's values"):
            dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather_objects(self, value: Any) -> List[Any]:
        """Every replica's ``value``, in rank order, on every replica."""
        if not self.parallel:
            return [value]
        gathered = [None] * self.size
        with _collective("gathering evaluation results"):
            dist.all_gather_object(gathered, value)
        return gathered

    def synchronise(self, parameters: Sequence[torch.Tensor], seed: Optional[int]) -> None:
        """Make the replicas start from rank 0's parameters, then give each its own random stream.

        ``seed`` is the fit's seed (``None``: one drawn by rank 0). Rank 0 keeps the stream it has (so it
        draws the batches one process would); rank ``r`` > 0 is reseeded from ``(seed, r)``, so a run is
        reproducible and no two replicas draw the same noise."""
        if not self.parallel:
            return
        with torch.no_grad():
            for parameter in parameters:
                self.broadcast(parameter.data)
        if seed is None:
            seed = self.broadcast_object(int(torch.randint(2 ** 62, ()).item()) if self.is_main else None)
        if self.rank > 0:
            pyro.set_rng_seed(rank_seed(seed, self.rank))


def rank_seed(seed: int, rank: int, salt: int = 0) -> int:
    """A seed for replica ``rank`` of a run seeded ``seed`` (``salt``: e.g. the step a resumed fit starts
    at): well mixed, different for every rank."""
    return int(np.random.SeedSequence([int(seed) % 2 ** 63, rank, salt]).generate_state(1)[0])


def world() -> World:
    """The replicas of the process group this process belongs to (one replica when there is none)."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size())
    return World()


def launched_by_torchrun() -> bool:
    """Whether the environment is that of a torchrun worker in a group of more than one process."""
    return all(name in os.environ for name in TORCHRUN_VARIABLES) and int(os.environ["WORLD_SIZE"]) > 1


def replica_device(device: torch.device) -> torch.device:
    """This replica's device: under torchrun, ``cuda`` without an index is ``cuda:LOCAL_RANK``."""
    if device.type == "cuda" and device.index is None and launched_by_torchrun():
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return device


def launch(device: torch.device, timeout_s: float = DEFAULT_TIMEOUT_S) -> torch.device:
    """Join the process group torchrun describes, if any, and return this replica's device.

    gloo on the CPU, NCCL on CUDA with one GPU per local rank (``cuda`` becomes ``cuda:LOCAL_RANK``).
    A collective that waits longer than ``timeout_s`` fails with a :class:`DistributedError`, so a
    replica that dies or hangs stops the others instead of blocking them forever. Joining twice is
    harmless: the second call only returns the device.
    """
    if not launched_by_torchrun() or (dist.is_available() and dist.is_initialized()):
        return replica_device(device)
    if not dist.is_available():
        raise ZooError("this torch build has no torch.distributed; run without torchrun, or install a torch "
                       "build with distributed support.")
    if timeout_s <= 0:
        raise ZooError(f"the process-group timeout must be positive, got {timeout_s} s.")
    local_rank = int(os.environ["LOCAL_RANK"])
    if device.type == "cuda":
        if device.index is not None:
            raise ZooError(f"--device {device} would put every torchrun process on one GPU; use --device cuda "
                           "(each process takes cuda:LOCAL_RANK), or CUDA_VISIBLE_DEVICES to choose the GPUs.")
        if local_rank >= torch.cuda.device_count():
            raise ZooError(f"torchrun started local rank {local_rank} but this node has {torch.cuda.device_count()} "
                           "GPU(s); use --nproc-per-node at most the number of GPUs, or --device cpu.")
        device = replica_device(device)
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    timeout = datetime.timedelta(seconds=timeout_s)
    with _collective(f"joining the {backend} process group"):
        dist.init_process_group(backend, timeout=timeout, **({"device_id": device} if backend == "nccl" else {}))
    return device


def shutdown() -> None:
    """Leave the process group (the command line does at exit; a process group left open warns)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def _collective(what: str):
    try:
        yield
    except RuntimeError as error:  # torch's DistBackendError and timeouts included
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DistributedError(
            f"rank {world().rank if dist.is_initialized() else os.environ.get('RANK', '?')}: {what} failed "
            f"({first}); another process probably died or hung (see its output). Results finished so far are "
            "in the run folder; raise --dist-timeout if a step or an evaluation legitimately takes longer.") from error
