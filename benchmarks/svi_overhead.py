"""Per-step time of pyro_vi_zoo's SVI loop against a hand-written PyTorch ELBO of the same model.

The floor is plain PyTorch: the same model's log joint, the same mean-field
family, reparameterised draws, Adam; no Pyro. Both run in this process,
interleaved in blocks, after a warm-up; the figure reported is the ratio of the
median per-step times (ours / floor), so machine speed cancels out.

Each model contributes cases from ``benchmarks/overhead_<model>.py``: a function
``cases(device) -> list[Case]``. On CUDA every case whose ELBO can be recorded is also timed captured:
the zoo's step with ``capture="on"`` (recorded once as a CUDA graph, then replayed) against the same
hand-written step recorded the same way (:class:`~pyro_vi_zoo.engine.capture.GraphedUpdate`, Adam with
``capturable=True``). The captured ratio (zoo / floor, aim 1.2) and the zoo's own speed-up from
capture (eager / captured, aim 10 on linear regression and the BNN) are printed beside the eager ones.
Run::

    python benchmarks/svi_overhead.py [--models bayes_regression ...] [--device cpu|cuda] [--rounds 30]
"""

import argparse
import importlib.util
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional

import torch

from pyro_vi_zoo.devices import resolve_device
from pyro_vi_zoo.errors import ZooError

HERE = Path(__file__).resolve().parent
MAX_STEPS = 10**6


def zoo_steps(model: str, guide: str, dataset, setup, elbo: str, capture: str = "off") -> Callable[[int], None]:
    """k steps of pyro_vi_zoo's own loop (``make_step`` + ``run_steps``, as ``fit`` runs them)."""
    from pyro_vi_zoo.engine import make_step, resolve_settings, run_steps
    from pyro_vi_zoo.registry import get_family
    from pyro_vi_zoo.runner import guide_choice

    settings = resolve_settings({}, overrides=dict(elbo=elbo, num_particles=1, lr=0.01, lr_decay=1.0, steps=MAX_STEPS,
                                                   progress=False, seed=0, capture=capture))
    choice = guide_choice(guide, setup, get_family(model))
    step = make_step(setup.model, choice.build, dataset.train, settings, max_plate_nesting=setup.max_plate_nesting)
    losses = torch.empty(MAX_STEPS, device=dataset.train[0].device)
    return lambda steps: run_steps(step, steps, losses, 0)


@dataclass
class Case:
    """One comparison: ``zoo(k)`` and ``floor(k)`` each run k optimisation steps; on CUDA also their
    captured versions ``zoo_graph`` and ``floor_graph``."""

    label: str
    zoo: Callable[[int], None]
    floor: Callable[[int], None]
    target: float = 2.0
    zoo_graph: Optional[Callable[[int], None]] = None
    floor_graph: Optional[Callable[[int], None]] = None


def repeat(update: Callable[[], torch.Tensor]) -> Callable[[int], None]:
    """``run(k)``: k calls of a one-step ``update``."""

    def run(steps):
        for _ in range(steps):
            update()

    return run


def make_case(label: str, zoo, floor, device, elbo: str, target: float) -> Case:
    """A case from ``zoo(capture) -> run`` and ``floor(capturable) -> update``; captured variants on CUDA."""
    from pyro_vi_zoo.engine.capture import CAPTURABLE_ELBOS, GraphedUpdate

    case = Case(label, zoo("off"), repeat(floor(False)), target)
    if device.type == "cuda" and elbo in CAPTURABLE_ELBOS:
        case.zoo_graph, case.floor_graph = zoo("on"), repeat(unvalidated(GraphedUpdate(floor(True), device)))
    return case


def unvalidated(update: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
    """``update`` with torch's argument checks off (they read values back to the host, which a CUDA graph
    cannot record; the zoo's step runs without them after its validated warm-up call too)."""

    def run():
        before = torch.distributions.Distribution._validate_args
        torch.distributions.Distribution.set_default_validate_args(False)
        try:
            return update()
        finally:
            torch.distributions.Distribution.set_default_validate_args(before)

    return run


def load_cases(models, device) -> List[Case]:
    cases = []
    for path in sorted(HERE.glob("overhead_*.py")):
        name = path.stem[len("overhead_"):]
        if models and name not in models:
            continue
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = module
        spec.loader.exec_module(module)
        cases += module.cases(device)
    return cases


def per_step_seconds(run: Callable[[int], None], steps: int, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    run(steps)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def measure(case: Case, device, rounds: int, block: int, warmup: int) -> List[float]:
    """Median per-step seconds of ours and of the floor (then their captured versions, where there are),
    interleaved block by block."""
    runs = [run for run in (case.zoo, case.floor, case.zoo_graph, case.floor_graph) if run is not None]
    for run in runs:
        run(warmup)
    times = [[] for _ in runs]
    for _ in range(rounds):
        for run, samples in zip(runs, times):
            samples.append(per_step_seconds(run, block, device))
    return [statistics.median(samples) for samples in times]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", help="models to run (default: all with an overhead_<model>.py)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--block", type=int, default=20, help="steps per timed block")
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)  # CUDA asked for and absent: one clear line
    header = f"{'case':58s} {'ours ms':>8s} {'floor ms':>9s} {'ratio':>6s} {'target':>7s}"
    if device.type == "cuda":
        header += f"  {'ours graph':>10s} {'floor graph':>11s} {'ratio':>6s} {'capture speed-up':>16s}"
    print(header)
    for case in load_cases(args.models, device):
        ours, floor, *graphs = measure(case, device, args.rounds, args.block, args.warmup)
        ratio = ours / floor
        flag = "ok" if ratio <= case.target else "over"
        line = f"{case.label:58s} {ours * 1e3:8.3f} {floor * 1e3:9.3f} {ratio:6.2f} {case.target:5.1f}x {flag:4s}"
        if graphs:
            ours_graph, floor_graph = graphs
            line += (f" {ours_graph * 1e3:10.3f} {floor_graph * 1e3:11.3f} {ours_graph / floor_graph:6.2f} "
                     f"{ours / ours_graph:15.1f}x")
        print(line)


if __name__ == "__main__":
    try:
        main()
    except ZooError as error:
        sys.exit(f"error: {error}")
