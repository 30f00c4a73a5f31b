"""The whole SVI step recorded once as a CUDA graph and replayed (the zoo's answer to "Pyro is slow").

A Pyro step is hundreds of small kernels launched from Python (tracing the guide, replaying the model,
log-probability sums, backward, Adam); on a GPU the launches cost more than the arithmetic. Recorded
once with ``torch.cuda.graph`` after a few eager warm-up steps on a side stream, the step replays as
one launch. What it needs, and the engine provides: a sync-free ELBO (:mod:`.elbos`), Adam with
``capturable=True`` and its learning rate as a device tensor decayed inside the step, gradient clipping
on the device, minibatches copied into the step's own input tensors, and validation off. Whatever
cannot be recorded runs eagerly, with one line that says why.
"""

import warnings
from typing import Optional

import torch

from ..errors import ZooError

CAPTURE_CHOICES = ("auto", "on", "off")
CAPTURABLE_ELBOS = ("trace", "meanfield", "enum", "stl", "score", "iwae", "iwae_dreg")
WARMUP_STEPS = 3


class CaptureFallback(UserWarning):
    """The step runs eagerly instead of as a CUDA graph; the message says why."""


def wants_capture(choice: str, device: torch.device, elbo: str, replicas: int = 1) -> bool:
    """Whether to record the step: ``auto`` on CUDA, ``on`` (CUDA required), ``off``; an ELBO that
    reads values back to the host, or a data-parallel step (``replicas`` > 1, whose all-reduce this
    version does not record), runs eagerly with a :class:`CaptureFallback` warning."""
    if choice not in CAPTURE_CHOICES:
        raise ZooError(f"unknown capture {choice!r}; choose one of: {', '.join(CAPTURE_CHOICES)}.")
    if choice == "on" and device.type != "cuda":
        raise ZooError(f"--capture on records the step as a CUDA graph, but this fit runs on {device}; "
                       "use --device cuda, or --capture auto/off.")
    if choice == "off" or device.type != "cuda":
        return False
    if replicas > 1:
        if choice == "on":
            raise ZooError(f"--capture on does not apply to a data-parallel fit ({replicas} processes): the step's "
                           "gradient all-reduce is not recorded in a CUDA graph yet; use --capture auto or off.")
        warnings.warn(f"running eagerly: a data-parallel step ({replicas} processes) all-reduces its gradients, "
                      "which this version does not record in a CUDA graph", CaptureFallback)
        return False
    if elbo not in CAPTURABLE_ELBOS:
        warnings.warn(f"running eagerly: --elbo {elbo} reads values back to the host each step, which a CUDA "
                      f"graph cannot hold (capturable: {', '.join(CAPTURABLE_ELBOS)})", CaptureFallback)
        return False
    return True


class GraphedUpdate:
    """Runs ``update()`` eagerly on a side stream for the first steps, then records it and replays it.

    ``update()`` must return the step's loss as a device tensor and do no host synchronisation;
    its inputs must live in tensors that are refilled in place between calls.
    """

    def __init__(self, update):
        self.update = update
        self.graph: Optional[torch.cuda.CUDAGraph] = None
        self.static_loss: Optional[torch.Tensor] = None
        self.eager_steps = 0
        self.stream = torch.cuda.Stream()

    def __call__(self) -> torch.Tensor:
        if self.graph is not None:
            self.graph.replay()
            return self.static_loss
        if self.eager_steps < WARMUP_STEPS:
            self.eager_steps += 1
            return self._on_side_stream()
        return self._record_then_replay()

    def _on_side_stream(self) -> torch.Tensor:
        self.stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self.stream):
            loss = self.update()
        torch.cuda.current_stream().wait_stream(self.stream)
        return loss

    def _record_then_replay(self) -> torch.Tensor:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.static_loss = self.update()
        self.graph = graph
        graph.replay()  # recording does not run the step
        return self.static_loss
