"""Checkpoints of a fit in progress, so that an interrupted run resumes where it stopped.

A checkpoint holds everything the next step depends on: the guide's and model's parameters, the
optimiser's and the schedule's state, the losses so far, the epoch's order of minibatches and the random
state. Resumed on the CPU with the same settings, a fit takes exactly the steps an uninterrupted one takes.
Written atomically every ``every`` steps (an epoch); removed when the fit finishes. A data-parallel fit
(rank 0 writes) resumes with any number of processes: the checkpoint holds the global batches' order.
"""

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional

import torch
from pyro.util import get_rng_state, set_rng_state

from ..runs import atomic_torch_save
from .distributed import world


@dataclass
class Checkpoints:
    """Where one fit keeps its checkpoint, and every how many steps it writes it; ``earlier_seconds`` is the
    fit's time before the checkpoint it resumed from (a checkpoint holds the time spent so far)."""

    path: Path
    every: int
    earlier_seconds: float = 0.0
    started: float = field(default_factory=time.perf_counter)

    def elapsed(self) -> float:
        return self.earlier_seconds + time.perf_counter() - self.started

    def due(self, next_index: int) -> bool:
        return next_index % self.every == 0

    def save(self, step, losses: torch.Tensor, next_index: int) -> None:
        """Write the fit's state (data-parallel: rank 0 writes; the replicas' parameters are the same)."""
        if not step.world.is_main:
            return
        state = {
            "index": next_index,
            "losses": losses[:next_index].detach().cpu(),
            **fit_state(step),
            "optimizer": step.optimizer_state(),
            "schedule": None if step.schedule is None else step.schedule.state_dict(),
            "order": None if step.feeder is None else step.feeder.order,
            "rng": get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None,
            "wall_time": self.elapsed(),
        }
        atomic_torch_save(state, self.path)

    def load(self) -> Optional[Dict[str, Any]]:
        if not self.path.exists():
            return None
        return torch.load(self.path, weights_only=False, map_location="cpu")  # a GPU run resumes anywhere

    def restore(self, step, losses: torch.Tensor, state: Dict[str, Any]) -> int:
        """Put ``state`` into a freshly built ``step``; returns the index of the next step."""
        load_fit_state(step, state)
        step.load_optimizer_state(state["optimizer"])
        if step.schedule is not None and state["schedule"] is not None:
            step.schedule.load_state_dict(state["schedule"])
        if step.feeder is not None and state["order"] is not None:
            step.feeder.order = state["order"].to(losses.device)
        losses[: state["index"]] = state["losses"].to(losses.device)
        self.earlier_seconds, self.started = float(state.get("wall_time", 0.0)), time.perf_counter()
        set_rng_state(state["rng"])
        if state["cuda_rng"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        return int(state["index"])

    def remove(self) -> None:
        if world().is_main:
            self.path.unlink(missing_ok=True)


def fit_state(step) -> Dict[str, Any]:
    """The fitted values of a step's parameters: its param-store entries and its model's and guide's modules."""
    return {
        "params": {name: value.detach().clone() for name, value in step.param_state["params"].items()},
        "modules": {role: module.state_dict() for role, module in (("model", step.model), ("guide", step.guide))
                    if isinstance(module, torch.nn.Module)},
    }


def load_fit_state(step, state: Dict[str, Any]) -> None:
    """Put :func:`fit_state`'s values into a freshly built ``step`` (its warm-up call made the parameters)."""
    with torch.no_grad():
        for name, value in state["params"].items():
            step.param_state["params"][name].copy_(value)
    for role, module_state in state["modules"].items():
        getattr(step, role).load_state_dict(module_state)
