"""The zoo's sync-free TraceEnum_ELBO against Pyro's, per SVI step of the enumerated Gaussian mixture.

Both run the zoo's own loop (``make_step`` + ``run_steps``) on the same data, guide and seed, interleaved in
blocks in one process after a warm-up; the figure is the ratio of median per-step times (Pyro's / ours). The
zoo's ELBO computes the same numbers (``tests/test_sync_free.py``) by one sum-product contraction where Pyro
goes through DiCE and checks its probabilities on the host. Run::

    python benchmarks/enum_elbo.py [--device cpu|cuda] [--rounds 30]
"""

import argparse
import statistics
import sys

import torch
from pyro.infer import TraceEnum_ELBO

from pyro_vi_zoo.devices import resolve_device
from pyro_vi_zoo.engine import make_step, resolve_settings, run_steps
from pyro_vi_zoo.engine import step as step_module
from pyro_vi_zoo.errors import ZooError
from pyro_vi_zoo.registry import get_family
from pyro_vi_zoo.runner import guide_choice

from svi_overhead import per_step_seconds  # this folder: the same timing as the overhead benchmark

MAX_STEPS = 10**6


def steps_with(elbo_class, guide: str, dataset, setup, family, device):
    """``run(k)``: k steps of the zoo's loop with ``elbo_class`` as its ``enum`` ELBO."""
    ours = step_module.ELBOS["enum"]
    step_module.ELBOS["enum"] = elbo_class
    try:
        settings = resolve_settings({}, overrides=dict(elbo="enum", lr=0.01, lr_decay=1.0, steps=MAX_STEPS,
                                                       progress=False, seed=0, capture="off"))
        step = make_step(setup.model, guide_choice(guide, setup, family).build, dataset.train, settings,
                         max_plate_nesting=setup.max_plate_nesting)
    finally:
        step_module.ELBOS["enum"] = ours
    losses = torch.empty(MAX_STEPS, device=device)
    return lambda k: run_steps(step, k, losses, 0)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--block", type=int, default=20, help="steps per timed block")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    family = get_family("gmm")
    dataset = family.load_data(None).to(device)
    setup = family.setup(dataset, assignments="enumerated")
    print(f"{'guide':12s} {'zoo ms':>8s} {'Pyro ms':>8s} {'speed-up':>8s}")
    for guide in ("mean_field", "auto_normal"):
        runs = [steps_with(step_module.ELBOS["enum"], guide, dataset, setup, family, device),
                steps_with(TraceEnum_ELBO, guide, dataset, setup, family, device)]
        for run in runs:
            run(50)
        times = [[], []]
        for _ in range(args.rounds):
            for run, samples in zip(runs, times):
                samples.append(per_step_seconds(run, args.block, device) * 1000)
        ours, pyros = (statistics.median(samples) for samples in times)
        print(f"{guide:12s} {ours:8.2f} {pyros:8.2f} {pyros / ours:7.2f}x")


if __name__ == "__main__":
    try:
        main()
    except ZooError as error:
        sys.exit(f"error: {error}")
