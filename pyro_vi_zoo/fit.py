"""Command line: ``python -m pyro_vi_zoo.fit MODEL [options]`` (also the ``pyro-vi-zoo`` script).

Fits the chosen guides to one model, prints the comparison table and writes
``--out/<model>/<timestamp>/``. Bad input exits with status 2 and one line that
names the problem and the fix; Ctrl-C keeps the rows of the guides that finished
and exits with status 130.
"""

import argparse
import sys
import types
import warnings
from typing import Dict, List, Optional

import pandas as pd
import torch

from .compare import compare
from .devices import DEVICE_CHOICES
from .errors import ZooError
from .guides.auto import GUIDES
from .registry import Option, all_specs, get_spec
from . import svi
from .svi import ELBOS, OPTIMIZERS

HIDDEN_COLUMNS = ("final_loss", "error", "kl_method")


def model_options() -> Dict[str, Option]:
    """Every model's command-line options, by flag (a flag shared by two models is one option)."""
    options = {}
    for spec in all_specs().values():
        for option in spec.options:
            options.setdefault(option.flag, option)
    return options


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pyro_vi_zoo.fit",
        description="Fit a zoo model with several variational guides and compare their posteriors.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("model", nargs="?", help="model name (see --list)")
    parser.add_argument("--list", action="store_true", help="list the models and guides, then exit")
    parser.add_argument("--guide", action="append", metavar="NAME",
                        help="a guide to fit (repeatable), or 'all' (default: every guide that suits the model)")
    parser.add_argument("--data", help="a data file or folder for the model's loader (default: embedded data)")
    parser.add_argument("--steps", type=int, help="SVI steps per guide (default: the model's)")
    parser.add_argument("--lr", type=float, help="Adam learning rate (default: the model's)")
    parser.add_argument("--lr-decay", type=float, help="final learning rate as a fraction of --lr")
    parser.add_argument("--optimizer", choices=OPTIMIZERS, help="adam, or clipped_adam (gradient-norm clipping)")
    parser.add_argument("--num-particles", type=int, help="ELBO particles per step (vectorised)")
    parser.add_argument("--elbo", choices=tuple(ELBOS), help="the ELBO estimator (default: the model's)")
    parser.add_argument("--batch-size", type=int, help="minibatch size (subsampled plate); default: full batch")
    parser.add_argument("--restarts", type=int, help="initialisations to try; the best by ELBO is kept")
    parser.add_argument("--validate", action="store_true",
                        help="check distribution arguments at every step, not only the first (slower)")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--device", choices=DEVICE_CHOICES, default="auto", help="auto = CUDA when available")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads for torch; the default models are small, where more threads "
                             "mostly add OpenMP overhead (raise it for large networks)")
    parser.add_argument("--out", default="runs", help="folder for results (a timestamped subfolder is made)")
    parser.add_argument("--eval-samples", type=int, default=1000, help="posterior draws for scores and figures")
    parser.add_argument("--fast", action="store_true", help="tiny settings for a smoke test (the tests use it)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    group = parser.add_argument_group("model-specific options (see --list for which model takes which)")
    for option in model_options().values():
        group.add_argument(option.flag, type=option.type, choices=option.choices, default=None,
                           help=f"{option.help} (default: {option.default})")
    return parser


def list_text() -> str:
    lines = ["models:"]
    for spec in all_specs().values():
        lines.append(f"  {spec.name:18s} {spec.description}")
        lines.append(f"  {'':18s} guides: {', '.join(spec.guides + tuple(spec.baselines))}")
        if spec.options:
            lines.append(f"  {'':18s} options: {', '.join(o.flag for o in spec.options)}")
    lines.append("guides:")
    lines += [f"  {info.name:18s} {info.description}" for info in GUIDES.values()]
    return "\n".join(lines)


def settings_from(args, spec) -> Dict:
    chosen = {
        "steps": args.steps, "lr": args.lr, "lr_decay": args.lr_decay, "optimizer": args.optimizer,
        "num_particles": args.num_particles, "elbo": args.elbo, "batch_size": args.batch_size,
        "restarts": args.restarts,
    }
    settings = dict(spec.fast_settings) if args.fast else {}
    settings.update({k: v for k, v in chosen.items() if v is not None})
    settings.update(seed=args.seed, device=args.device, progress=not args.no_progress, validate=args.validate)
    return settings


def split_options(args, spec):
    """The model-specific options given on the command line, as (data_options, model_options)."""
    own = {option.flag: option for option in spec.options}
    data_options, model_opts = {}, {}
    for flag, option in model_options().items():
        value = getattr(args, option.dest)
        if value is None:
            continue
        if flag not in own:
            raise ZooError(f"{flag} does not apply to {spec.name}; its options are: "
                           f"{', '.join(own) or 'none'}.")
        (data_options if own[flag].target == "data" else model_opts)[option.dest] = value
    return data_options, model_opts


def summary(metrics: pd.DataFrame) -> str:
    """The printed table: one row per guide, every metric column (the CSV also has the configuration)."""
    shown = metrics[[c for c in metrics.columns if c not in HIDDEN_COLUMNS]]
    return shown.to_string(index=False, float_format=lambda v: f"{v:.4g}")


def run(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list:
        print(list_text())
        return 0
    if args.model is None:
        parser.error("name a model (see --list)")
    spec = get_spec(args.model)
    if args.threads < 1:
        raise ZooError(f"--threads must be at least 1, got {args.threads}.")
    torch.set_num_threads(args.threads)
    if args.eval_samples < 1:
        raise ZooError(f"--eval-samples must be at least 1, got {args.eval_samples}.")
    data_options, model_opts = split_options(args, spec)
    result = compare(
        spec, guides=args.guide, data=args.data, data_options=data_options, model_options=model_opts,
        out=args.out, num_eval_samples=100 if args.fast else args.eval_samples,
        num_elbo_particles=100 if args.fast else 1000, fast=args.fast, **settings_from(args, spec),
    )
    if not result.table.empty:
        print(summary(result.metrics))
    if result.run_dir is not None:
        print(f"results: {result.run_dir}")
    if result.interrupted:
        print(f"interrupted: kept {len(result.table)} finished guide(s)", file=sys.stderr)
        return 130
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    warnings.filterwarnings("ignore", message=".*init_loc_fn.*AutoIAFNormal.*")
    try:
        return run(argv)
    except ZooError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


class _CallableModule(types.ModuleType):
    """Importing this module makes ``pyro_vi_zoo.fit`` name it instead of the function of the same name;
    calling it still fits, so ``pyro_vi_zoo.fit(...)`` works whatever was imported first."""

    def __call__(self, *args, **kwargs):
        return svi.fit(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

if __name__ == "__main__":
    sys.exit(main())
