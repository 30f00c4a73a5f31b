"""The command line: ``python -m pyro_vi_zoo.fit MODEL [options]`` (also the ``pyro-vi-zoo`` script).

Fits the chosen guides to one model, prints the comparison table and writes
``--out/<model>/<timestamp>/``. Bad input exits with status 2 and one line that
names the problem and the fix; a run where no guide finished exits with status 1
and says which failed and why; Ctrl-C keeps the rows of the guides that finished
and exits with status 130. Under ``torchrun`` the same command fits data-parallel
(:mod:`pyro_vi_zoo.engine.distributed`); rank 0 prints and writes.
"""

import argparse
import os
import sys
import warnings
from typing import Dict, List, Optional

import pandas as pd
import torch

from .runner import compare
from .devices import DEVICE_HELP, device_name
from .engine import distributed
from .engine.settings import DEFAULTS, ELBO_NAMES, OPTIMIZERS
from .errors import Note, ZooError
from .family import Option
from .guides.auto import GUIDES
from .registry import all_families, get_family

HIDDEN_COLUMNS = ("final_loss", "error", "kl_method")


def model_options() -> Dict[str, Option]:
    """Every model's command-line options, by flag (one entry per flag; models may give a flag their own meaning)."""
    options = {}
    for family in all_families().values():
        for option in family.options:
            options.setdefault(option.flag, option)
    return options


def _defaults_text(setting: str) -> str:
    """Which default applies, per model: ``2000 (bayes_regression), 5000 (bnn_regression)``; fast mode after ``|``."""
    families = all_families().values()
    shown = lambda value: "none" if value is None else value
    by_epochs = lambda f: setting == "steps" and f.settings.get("epochs", DEFAULTS["epochs"]) is not None
    full = ", ".join(f"{'set by --epochs' if by_epochs(f) else shown(f.settings.get(setting, DEFAULTS[setting]))} "
                     f"({f.name})" for f in families)
    fast = ", ".join(f"{f.fast_settings[setting]} ({f.name})" for f in families if setting in f.fast_settings)
    return f"default: {full}" + (f"; with --fast: {fast}" if fast else "")


def _program() -> str:
    """How the user called us, for usage lines: the console script or the module."""
    return "pyro-vi-zoo" if os.path.basename(sys.argv[0]) == "pyro-vi-zoo" else "python -m pyro_vi_zoo.fit"


def build_parser(family=None, add_help: bool = True) -> argparse.ArgumentParser:
    """The parser; with a ``family`` its own options carry their types, choices and defaults, and other
    models' flags are accepted only to be refused with a clear line (``--hidden`` does not apply to gmm)."""
    parser = argparse.ArgumentParser(
        prog=_program(),
        description="Fit a zoo model with several variational guides and compare their posteriors.",
        add_help=add_help,
    )
    setting = lambda name, text: f"{text} ({_defaults_text(name)})"
    parser.add_argument("model", nargs="?", help="model name (see --list)")
    parser.add_argument("--list", action="store_true", help="list the models and guides, then exit")
    parser.add_argument("--guide", action="append", metavar="NAME",
                        help="a guide to fit (repeatable), or 'all' (default: every guide that suits the model)")
    parser.add_argument("--data", help="a data file or folder for the model's loader (default: embedded data)")
    parser.add_argument("--steps", type=int, help=setting("steps", "SVI steps per guide"))
    parser.add_argument("--lr", type=float, help=setting("lr", "Adam learning rate"))
    parser.add_argument("--lr-decay", type=float, help=setting("lr_decay", "final learning rate as a fraction of --lr"))
    parser.add_argument("--optimizer", choices=OPTIMIZERS,
                        help=setting("optimizer", "adam, or clipped_adam (gradient-norm clipping)"))
    parser.add_argument("--num-particles", type=int, help=setting("num_particles", "ELBO particles per step (vectorised)"))
    parser.add_argument("--elbo", choices=ELBO_NAMES, help=setting("elbo", "the ELBO estimator"))
    parser.add_argument("--batch-size", type=int, help=setting("batch_size", "minibatch size"))
    parser.add_argument("--epochs", type=int,
                        help=setting("epochs", "passes over the training rows, for models trained by minibatch epochs"))
    parser.add_argument("--restarts", type=int, help=setting("restarts", "initialisations to try; the best by ELBO is kept"))
    parser.add_argument("--validate", action="store_true",
                        help="check distribution arguments at every step, not only the first (slower)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--device", type=device_name, help=DEVICE_HELP + " (default: auto)")
    parser.add_argument("--capture", choices=("auto", "on", "off"),
                        help="record each SVI step as a CUDA graph and replay it: auto (on CUDA), on (CUDA "
                             "required), off (default: auto)")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads for torch; the default models are small, where more threads "
                             "mostly add OpenMP overhead (raise it for large networks) (default: 1)")
    parser.add_argument("--out", default="runs", help="folder for results; a timestamped subfolder is made (default: runs)")
    parser.add_argument("--eval-samples", type=int,
                        help="posterior draws for scores and figures (default: 1000; with --fast: 100)")
    parser.add_argument("--is-samples", type=int,
                        help="importance samples per test example for log-likelihoods of models with local "
                             "latents (default: 5000, as in the IWAE paper; with --fast: 100)")
    parser.add_argument("--fast", action="store_true",
                        help="the models' fast settings for a smoke test (the tests use it); explicit flags still win")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument("--resume", metavar="RUN_DIR",
                        help="continue an interrupted run in RUN_DIR (same model, data and settings): finished rows "
                             "are kept, models trained by epochs continue from their last checkpoint")
    parser.add_argument("--dist-timeout", type=float, default=distributed.DEFAULT_TIMEOUT_S, metavar="SECONDS",
                        help="under torchrun: how long a process waits for the others before it stops with an "
                             f"error (a process died or hung) (default: {distributed.DEFAULT_TIMEOUT_S})")
    parser.add_argument("--arviz", action="store_true",
                        help="also write each guide's draws as ArviZ InferenceData (netCDF) in the run folder "
                             "(needs pip install arviz)")
    own = {option.flag: option for option in family.options} if family is not None else {}
    title = (f"options of {family.name}" if family is not None
             else "model-specific options (python -m pyro_vi_zoo.fit MODEL --help shows a model's own)")
    group = parser.add_argument_group(title)
    for flag, option in model_options().items():
        if flag in own:
            option = own[flag]
            group.add_argument(flag, type=option.type, choices=option.choices, default=None,
                               help=f"{option.help} (default: {option.default})")
        else:
            group.add_argument(flag, default=None, help=argparse.SUPPRESS if family is not None else
                               f"{option.help} (default: {option.default})")
    return parser


def family_named_in(argv) -> Optional[object]:
    """The family named by the positional argument (options that take a value may come first), so that its
    own options can be parsed; ``None`` where the command line names none or is wrong (the full parse says so)."""
    peek = build_parser(add_help=False)
    peek.exit_on_error = False
    try:
        known, _ = peek.parse_known_args(argv)
    except (argparse.ArgumentError, ZooError):
        return None
    return get_family(known.model) if known.model and not known.list else None


def list_text() -> str:
    lines = ["models:"]
    for family in all_families().values():
        lines.append(f"  {family.name:18s} {family.description}")
        lines.append(f"  {'':18s} guides (the default rows): {', '.join(family.row_names)}")
        if family.options:
            lines.append(f"  {'':18s} options: {', '.join(o.flag for o in family.options)}")
    lines.append("guides (--guide NAME; any auto guide fits any model whose latents it can cover):")
    lines += [f"  {info.name:18s} {info.description}" for info in GUIDES.values()]
    return "\n".join(lines)


def settings_from(args) -> Dict:
    """The fit settings given on the command line (``None``: not given, so the model's default applies)."""
    chosen = {
        "steps": args.steps, "lr": args.lr, "lr_decay": args.lr_decay, "optimizer": args.optimizer,
        "num_particles": args.num_particles, "elbo": args.elbo, "batch_size": args.batch_size, "epochs": args.epochs,
        "capture": args.capture,
        "restarts": args.restarts,
    }
    settings = {k: v for k, v in chosen.items() if v is not None}
    settings.update(seed=args.seed, progress=not args.no_progress, validate=args.validate)
    if args.device is not None:
        settings["device"] = args.device
    return settings


def split_options(args, family):
    """The model-specific options given on the command line, as (data_options, model_options)."""
    own = {option.flag: option for option in family.options}
    data_options, model_opts = {}, {}
    for flag, option in model_options().items():
        value = getattr(args, option.dest)
        if value is None:
            continue
        if flag not in own:
            raise ZooError(f"{flag} does not apply to {family.name}; its options are: "
                           f"{', '.join(own) or 'none'}.")
        (data_options if own[flag].target == "data" else model_opts)[option.dest] = value
    return data_options, model_opts


def summary(metrics: pd.DataFrame) -> str:
    """The printed table: one row per guide, every metric column (the CSV also has the configuration)."""
    shown = metrics[[c for c in metrics.columns if c not in HIDDEN_COLUMNS]]
    return shown.to_string(index=False, float_format=lambda v: f"{v:.4g}")


def run(argv: Optional[List[str]] = None) -> int:
    parser = build_parser(family_named_in(sys.argv[1:] if argv is None else argv))
    args = parser.parse_args(argv)
    if args.list:
        print(list_text())
        return 0
    if args.model is None:
        parser.error("name a model (see --list)")
    family = get_family(args.model)
    if args.threads < 1:
        raise ZooError(f"--threads must be at least 1, got {args.threads}.")
    torch.set_num_threads(args.threads)
    eval_samples = args.eval_samples if args.eval_samples is not None else (100 if args.fast else 1000)
    is_samples = args.is_samples if args.is_samples is not None else (100 if args.fast else 5000)
    for flag, value in (("--eval-samples", eval_samples), ("--is-samples", is_samples)):
        if value < 1:
            raise ZooError(f"{flag} must be at least 1, got {value}.")
    data_options, model_opts = split_options(args, family)
    result = compare(
        family, guides=args.guide, data=args.data, data_options=data_options, model_options=model_opts,
        out=args.out, num_eval_samples=eval_samples, num_elbo_particles=100 if args.fast else 1000,
        num_is_samples=is_samples, fast=args.fast, arviz=args.arviz, resume=args.resume,
        dist_timeout=args.dist_timeout, **settings_from(args),
    )
    main_rank = distributed.world().is_main  # data-parallel under torchrun: rank 0 prints
    if not result.table.empty and main_rank:
        print(summary(result.metrics))
    if result.run_dir is not None and main_rank:
        print(f"results: {result.run_dir}")
    if result.interrupted:
        print(f"interrupted: kept {len(result.table)} finished guide(s)", file=sys.stderr)
        return 130
    failed = result.failed
    if len(failed) and len(failed) == len(result.table):
        reasons = "; ".join(f"{row.guide}: {row.status}" for row in failed.itertuples())
        print(f"error: no guide finished ({reasons}); see the messages above", file=sys.stderr)
        return 1
    return 0


def _one_line_notes(show=warnings.showwarning):
    """``warnings.showwarning`` for the command line: a :class:`~pyro_vi_zoo.errors.Note` (why a step runs
    eagerly instead of captured, a data column left out) is one line of news, once per message, not a warning
    with source code; other warnings as usual."""
    said = set()

    def show_warning(message, category, filename, lineno, file=None, line=None):
        if not issubclass(category, Note):
            show(message, category, filename, lineno, file, line)
        elif str(message) not in said:
            said.add(str(message))
            print(f"note: {message}", file=sys.stderr)

    return show_warning


def main(argv: Optional[List[str]] = None) -> int:
    warnings.filterwarnings("ignore", message=".*init_loc_fn.*AutoIAFNormal.*")
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_notes()
            return run(argv)
    except ZooError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except distributed.DistributedError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # before any guide finished (loading data, a reference); the runner keeps rows after
        print("interrupted: no guide had finished", file=sys.stderr)
        return 130
    finally:
        distributed.shutdown()


if __name__ == "__main__":
    sys.exit(main())
