"""Per-step time of pyro_vi_zoo's SVI loop against a hand-written PyTorch ELBO of the same model.

The floor is plain PyTorch: the same model's log joint, the same mean-field
family, reparameterised draws, Adam; no Pyro. Both run in this process,
interleaved in blocks, after a warm-up; the figure reported is the ratio of the
median per-step times (ours / floor), so machine speed cancels out.

Each model contributes cases from ``benchmarks/overhead_<model>.py``: a function
``cases(device) -> list[Case]``. Run::

    python benchmarks/svi_overhead.py [--models bayes_regression ...] [--device cpu] [--rounds 30]
"""

import argparse
import importlib.util
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List

import torch

HERE = Path(__file__).resolve().parent
MAX_STEPS = 10**6


def zoo_steps(model: str, guide: str, dataset, setup, elbo: str) -> Callable[[int], None]:
    """k steps of pyro_vi_zoo's own loop (``make_step`` + ``run_steps``, as ``fit`` runs them)."""
    from pyro_vi_zoo.engine import make_step, resolve_settings, run_steps
    from pyro_vi_zoo.registry import get_family
    from pyro_vi_zoo.runner import guide_choice

    settings = resolve_settings({}, overrides=dict(elbo=elbo, num_particles=1, lr=0.01, lr_decay=1.0, steps=MAX_STEPS,
                                                   progress=False, seed=0))
    choice = guide_choice(guide, setup, get_family(model))
    step = make_step(setup.model, choice.build, dataset.train, settings, max_plate_nesting=setup.max_plate_nesting)
    losses = torch.empty(MAX_STEPS, device=dataset.train[0].device)
    return lambda steps: run_steps(step, steps, losses, 0)


@dataclass
class Case:
    """One comparison: ``zoo(k)`` and ``floor(k)`` each run k optimisation steps."""

    label: str
    zoo: Callable[[int], None]
    floor: Callable[[int], None]
    target: float = 2.0


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


def measure(case: Case, device, rounds: int, block: int, warmup: int):
    """Median per-step seconds of ours and of the floor, interleaved block by block."""
    case.zoo(warmup)
    case.floor(warmup)
    ours, floor = [], []
    for _ in range(rounds):
        ours.append(per_step_seconds(case.zoo, block, device))
        floor.append(per_step_seconds(case.floor, block, device))
    return statistics.median(ours), statistics.median(floor)


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
    device = torch.device(args.device)
    print(f"{'case':58s} {'ours ms':>8s} {'floor ms':>9s} {'ratio':>6s} {'target':>7s}")
    for case in load_cases(args.models, device):
        ours, floor = measure(case, device, args.rounds, args.block, args.warmup)
        ratio = ours / floor
        flag = "ok" if ratio <= case.target else "over"
        print(f"{case.label:58s} {ours * 1e3:8.3f} {floor * 1e3:9.3f} {ratio:6.2f} {case.target:5.1f}x {flag}")


if __name__ == "__main__":
    main()
