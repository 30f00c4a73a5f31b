"""The runner: one model × many guides → one table of posterior quality, and figures.

A comparison walks down once: family → data → setup → fit (the engine) → score
(the family's scorer) → report (table, run folder, figures). ``model`` is a
registry name, a :class:`~pyro_vi_zoo.family.Family`, or a user's own Pyro
model function (wrapped by :mod:`pyro_vi_zoo.user_model`). Each row carries its
whole configuration, so ``table.groupby(...)`` answers any comparison. With
``out`` set, results are written after every guide, atomically: an interrupted
run keeps the rows of the guides that finished.
"""

import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import pandas as pd
import pyro
import torch

from .devices import resolve_device
from .engine import FitResult, FitSettings, distributed, fit_guide, latent_sites, resolve_settings
from .engine.batches import EpochBatches
from .engine.capture import may_record
from .engine.checkpoints import Checkpoints
from .engine.fit import seeded
from .engine.result import is_enumerated, is_latent, model_trace
from .errors import DivergenceError, FitFailure, ZooError, first_line
from .family import Family, Setup
from .guides.auto import AUTO_GUIDES
from .registry import get_family
from .runs import atomic_torch_save, atomic_write, make_run_dir, save_figure, write_json, write_table
from .scoring import Baseline, Budget, Reference


# what may differ between a run and its resumption (a data-parallel run resumes with any number of processes)
RESUMABLE_CHANGES = ("torch", "processes")


@dataclass(frozen=True)
class GuideChoice:
    """A guide the runner can fit: its row name, a factory that builds it fresh, and how to treat it."""

    name: str
    build: Callable[[], Callable]
    has_density: bool = True
    finalize: Optional[Callable] = None
    settings: Dict[str, Any] = field(default_factory=dict)


@dataclass
class Comparison:
    """What :func:`compare` returns: the table, the fits, the data, reference, figures and where they were written."""

    table: pd.DataFrame
    fits: Dict[str, FitResult]
    dataset: Any
    reference: Optional[Reference]
    setup: Optional[Setup] = None
    baselines: Dict[str, Baseline] = field(default_factory=dict)
    draws: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    figures: Dict[str, Any] = field(default_factory=dict)
    run_dir: Optional[Path] = None
    interrupted: bool = False
    config_columns: Sequence[str] = ()

    @property
    def metrics(self) -> pd.DataFrame:
        """The table without its configuration columns: guide, status and what was measured."""
        return self.table[[c for c in self.table.columns if c not in self.config_columns or c == "guide"]]

    @property
    def failed(self) -> pd.DataFrame:
        """The rows whose fit did not finish (``status`` other than ``ok``), with their errors."""
        if self.table.empty or "status" not in self.table:
            return self.table
        return self.table[self.table["status"] != "ok"]


def resolve_family(model) -> Family:
    """A registry name or a :class:`Family` as it is; a plain Pyro model function wrapped in a family of its own."""
    if isinstance(model, (str, Family)):
        return get_family(model)
    if callable(model):
        from .user_model import user_family

        return user_family(model)
    raise ZooError(f"model must be a zoo model name, a Family, or a Pyro model function; got {type(model).__name__}.")


def prepare(family: Family, data, settings: FitSettings, data_options=None, model_options=None,
            dist_timeout: float = distributed.DEFAULT_TIMEOUT_S):
    """The family's data set, moved once to the settings' device, and its model bound to it.

    Under torchrun this joins the process group first (:func:`~pyro_vi_zoo.engine.distributed.launch`,
    with ``dist_timeout`` seconds), and the device is this replica's."""
    from .data import Dataset

    device = distributed.launch(resolve_device(settings.device), dist_timeout)
    dataset = data if isinstance(data, Dataset) else family.load_data(data, **(data_options or {}))
    dataset = dataset.to(device)
    return dataset, family.setup(dataset, **(model_options or {}))


def family_settings(family: Family, settings: Optional[FitSettings], overrides: Dict, fast: bool) -> FitSettings:
    """Explicit settings beat the family's (fast) defaults, which beat the global defaults."""
    defaults = dict(family.settings)
    if fast:
        defaults.update(family.fast_settings)
    chosen = {**(settings.chosen() if settings is not None else {}), **overrides}
    if chosen.get("steps") is not None and chosen.get("epochs") is not None:
        raise ZooError("give steps or epochs, not both: epochs set steps to epochs × batches per epoch.")
    if chosen.get("steps") is not None:
        defaults.pop("epochs", None)  # an explicit step count beats the family's default epochs
    return resolve_settings(defaults, settings, overrides)


def guide_choice(guide, setup: Setup, family: Family) -> GuideChoice:
    """The :class:`GuideChoice` for a guide name (the family's own or an auto guide) or a guide callable."""
    if callable(guide):
        name = getattr(guide, "__name__", type(guide).__name__)
        _keep_parameters_in_the_module(guide, name)
        return GuideChoice(name, lambda: guide)
    row_settings = dict(setup.guide_settings.get(guide, {}))
    if guide in setup.guides:
        return GuideChoice(guide, setup.guides[guide], settings=row_settings)
    if guide in AUTO_GUIDES:
        info = AUTO_GUIDES[guide]
        # auto guides cover the continuous latents; enumerated discrete sites are summed out by the ELBO
        guide_model = pyro.poutine.block(setup.model, hide_fn=is_enumerated)
        options = setup.auto_guide_options
        build = lambda: info.build(guide_model, **({} if options is None else options()))
        return GuideChoice(guide, build, info.has_density, info.finalize, row_settings)
    baselines = list(getattr(family.scoring, "baselines", {}))
    if guide in baselines:
        raise ZooError(f"{guide!r} is a baseline row of {family.name}, not a guide: compare runs it "
                       f"(zoo.compare({family.name!r}, guides=[..., {guide!r}])); fit takes a guide.")
    valid = list(setup.guides) + list(AUTO_GUIDES) + baselines
    raise ZooError(f"unknown guide {guide!r} for {family.name}; choose from: {', '.join(valid)} (or all).")


def _keep_parameters_in_the_module(guide, name: str) -> None:
    """The runner keeps each fit's parameters in its guide module (Pyro's module-local parameters). A PyroModule
    guide built outside that setting (``AutoNormal(model)`` at the top of a script) is switched to it while it
    has no parameters yet; one that already has some would lose them, and is refused with the fix."""
    if not isinstance(guide, pyro.nn.PyroModule):
        return
    modules = [module for module in guide.modules() if isinstance(module, pyro.nn.PyroModule)
               and not hasattr(module._pyro_context, "param_state")]
    if not modules:
        return
    if next(guide.parameters(), None) is not None:
        raise ZooError(f"guide {name!r} was built and called outside module-local parameters, which the runner "
                       "needs; build it inside `with pyro.settings.context(module_local_params=True):`, or pass a "
                       "guide name such as 'auto_normal'.")
    for module in modules:
        module._pyro_context.param_state = {"params": {}, "constraints": {}}


def resolve_rows(family: Family, guides) -> List:
    """The rows to run: ``None`` or ``"all"`` means every row the family lists; names and callables kept in order."""
    if guides is None or (isinstance(guides, str) and guides == "all"):
        return list(family.row_names)
    rows = [guides] if isinstance(guides, str) or callable(guides) else list(guides)
    if any(isinstance(row, str) and row == "all" for row in rows):
        return list(family.row_names)
    return list(dict.fromkeys(rows))


def fit_choice(choice: GuideChoice, family: Family, setup: Setup, dataset, settings: FitSettings,
               checkpoint_dir: Optional[Path] = None, restore: Optional[Dict[str, Any]] = None) -> FitResult:
    """Fit one guide on a prepared data set (the engine, with the setup's keywords or minibatch epochs).

    With ``checkpoint_dir``, a fit trained by epochs (one start) writes a checkpoint there after every
    epoch and resumes from one it finds. ``restore`` rebuilds a finished fit from its saved state instead."""
    settings = settings.replace(**choice.settings) if choice.settings else settings
    if settings.elbo == "stl" and not choice.has_density:
        raise ZooError(f"--elbo stl needs a guide with a density; {choice.name!r} is a point estimate "
                       "(its ELBO has no entropy term to stick); use --elbo trace for it.")
    replicas = distributed.world()
    if not replicas.is_main:  # rank 0 draws the progress bars
        settings = settings.replace(progress=False)
    train_kwargs, batches, shards = {}, None, None
    if settings.batch_size is not None and setup.make_batch is not None:
        batches = EpochBatches(setup.make_batch, dataset.num_train, settings.batch_size, dataset.device, replicas)
        if settings.epochs is not None:
            settings = settings.replace(steps=settings.epochs * batches.batches_per_epoch)
    elif settings.epochs is not None:
        if setup.make_batch is not None:
            raise ZooError(f"{family.name!r} trains by epochs of minibatches (epochs={settings.epochs}) and needs a "
                           "batch size; pass --batch-size (batch_size= from Python).")
        raise ZooError(f"--epochs applies to models trained by minibatch epochs; {family.name!r} counts --steps "
                       "instead.")
    elif settings.batch_size is not None:
        if setup.batch_keyword is None:
            raise ZooError(f"model {family.name!r} does not support minibatches; drop --batch-size.")
        global_batch = min(settings.batch_size, dataset.num_train)
        if (replicas.parallel or records_on_cuda(settings, dataset)) and setup.subsample_keyword is not None:
            # a distributed sampler: each replica's plate gets its share of one shuffled global batch;
            # a recorded step gets its rows as an input refilled before each replay
            shards = plate_shards(setup, dataset, global_batch, replicas)
        else:  # each replica's plate draws its own share
            train_kwargs[setup.batch_keyword] = replicas.share(global_batch, settings.batch_size)
    return fit_guide(
        setup.model, choice.build, dataset.train, settings, train_kwargs=train_kwargs,
        max_plate_nesting=setup.max_plate_nesting, model_name=family.name, guide_name=choice.name,
        has_density=choice.has_density, finalize=choice.finalize, score_model=setup.score_model,
        batches=batches or shards, checkpoints=_checkpoints(checkpoint_dir, choice.name, batches, settings),
        restore=restore,
    )


def records_on_cuda(settings: FitSettings, dataset) -> bool:
    """Whether the step may be recorded as a CUDA graph: then a plate's minibatch rows come from outside
    (shuffled epochs copied into the step's input), not from a draw inside the recorded step."""
    return may_record(settings.capture, dataset.device)


def plate_shards(setup: Setup, dataset, global_batch: int, replicas: distributed.World) -> EpochBatches:
    """Minibatches for a model whose plate takes its rows' indices: shuffled epochs, shared by the replicas
    (steps still count steps; the data set stays whole, only the indices change)."""
    train, keyword = dataset.train, setup.subsample_keyword
    return EpochBatches(lambda rows: (train, {keyword: rows}), dataset.num_train, global_batch, dataset.device,
                        replicas)


def _checkpoints(directory: Optional[Path], name: str, batches, settings: FitSettings) -> Optional[Checkpoints]:
    if directory is None or batches is None or settings.restarts != 1:
        return None
    return Checkpoints(Path(directory) / f"{name}.pt", every=batches.batches_per_epoch)


def fit(model, guide=None, data=None, *, data_options=None, model_options=None, settings: Optional[FitSettings] = None,
        fast: bool = False, dist_timeout: float = distributed.DEFAULT_TIMEOUT_S, **overrides) -> FitResult:
    """Fit one guide to one model by SVI.

    Args:
        model: a registry name (``"bayes_regression"``), a :class:`~pyro_vi_zoo.family.Family`,
            or a plain Pyro model function taking the data as positional arguments.
        guide: a guide name (``"mean_field"``: the family's hand-written guide, or an auto
            guide) or a guide callable; ``None``: the family's first guide.
        data: ``None`` for the family's embedded default, or what its loader takes (arrays
            such as ``(x, y)``, a path, a :class:`~pyro_vi_zoo.data.Dataset`).
        data_options, model_options: the family's own options (see ``--list``).
        settings, overrides: a :class:`FitSettings` and keyword overrides of its fields
            (``steps=500, lr=0.01, device="cpu"``); explicit values beat the family's defaults.
        fast: the family's fast settings (smoke tests) under the explicit ones.
        dist_timeout: under torchrun, seconds a replica waits for the others before it fails
            (data-parallel fits: :mod:`pyro_vi_zoo.engine.distributed`).

    Returns:
        A :class:`~pyro_vi_zoo.engine.FitResult`.
    """
    family = resolve_family(model)
    settings = family_settings(family, settings, overrides, fast)
    with seeded(settings.seed):
        dataset, setup = prepare(family, data, settings, data_options, model_options, dist_timeout)
        choice = guide_choice(family.guides[0] if guide is None else guide, setup, family)
        check_guide_sites(choice, setup, dataset)
        return fit_choice(choice, family, setup, dataset, settings)


def compare(
    model,
    guides=None,
    data=None,
    *,
    data_options: Optional[Dict[str, Any]] = None,
    model_options: Optional[Dict[str, Any]] = None,
    settings: Optional[FitSettings] = None,
    out=None,
    num_eval_samples: int = 1000,
    num_elbo_particles: int = 1000,
    num_is_samples: int = 5000,
    draw_figures: bool = True,
    arviz: bool = False,
    resume=None,
    fast: bool = False,
    dist_timeout: float = distributed.DEFAULT_TIMEOUT_S,
    **overrides,
) -> Comparison:
    """Fit each guide to one model and score the posteriors side by side.

    Args:
        model, data, data_options, model_options, settings, fast, dist_timeout, overrides: as for :func:`fit`.
        guides: guide names and guide callables (``None`` or ``"all"``: every row the family lists).
        out: a folder; results go to ``out/<model>/<timestamp>/`` (CSV, JSON, settings,
            fitted parameters, PNG figures). ``None`` writes nothing.
        num_eval_samples: posterior draws for predictive scores and reference distances.
        num_elbo_particles: importance samples for the ELBO and PSIS k̂ (global latents).
        num_is_samples: importance samples per example for test log-likelihoods (local latents).
        draw_figures: draw the figures (written to ``out`` when set).
        arviz: also write each fit's draws of the compared sites and its posterior predictive as ArviZ
            InferenceData, ``out/.../inference_data/<guide>.nc`` (needs the ``arviz`` extra).
        resume: a run folder of an interrupted comparison with the same model, data and settings: its
            finished rows are kept, a fit trained by epochs continues from its last checkpoint (models
            trained by epochs write one per epoch into ``<run>/checkpoints/``), the rest run anew.

    Returns:
        A :class:`Comparison`; ``table`` has one row per guide; a guide that diverged
        has ``status`` ``diverged`` and its ``error``.
    """
    family = resolve_family(model)
    settings = family_settings(family, settings, overrides, fast)
    with seeded(settings.seed):
        return _compare(family, guides, data, settings, data_options, model_options, out, fast,
                        Budget(num_eval_samples, num_elbo_particles, num_is_samples), draw_figures, arviz, resume,
                        dist_timeout)


def _compare(family, guides, data, settings, data_options, model_options, out, fast, budget, draw_figures, arviz,
             resume=None, dist_timeout=distributed.DEFAULT_TIMEOUT_S):
    dataset, setup = prepare(family, data, settings, data_options, model_options, dist_timeout)
    baselines = getattr(family.scoring, "baselines", {})
    rows = [row if (isinstance(row, str) and row in baselines) else guide_choice(row, setup, family)
            for row in resolve_rows(family, guides)]
    names = [row if isinstance(row, str) else row.name for row in rows]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ZooError(f"several guides are named {', '.join(map(repr, repeated))}; rows, fits and files are keyed by "
                       "a guide's name, so give each guide callable its own __name__.")
    for row in rows:
        if isinstance(row, GuideChoice):
            check_guide_sites(row, setup, dataset)
    config = _configuration(family, dataset, settings, data_options, model_options, setup)
    replicas = distributed.world()
    finished, restored = [], []
    if resume is not None:
        run_dir = Path(resume)
        finished = _resumed_rows(run_dir, config)
        done = {record["guide"] for record in finished}
        restored = [row for row in rows if isinstance(row, GuideChoice) and row.name in done]
        rows = [row for row in rows if (row if isinstance(row, str) else row.name) not in done]
    else:  # rank 0 makes the run folder; every replica learns where it is (checkpoints are read from it)
        run_dir = make_run_dir(out, family.name) if out is not None and replicas.is_main else None
        if run_dir is not None:
            write_json(run_dir / "settings.json", config)
        run_dir = replicas.broadcast_object(run_dir)
    writes = run_dir is not None and replicas.is_main
    try:
        return _run_rows(family, rows, dataset, setup, settings, config, finished, run_dir, writes, budget,
                         fast, draw_figures, arviz, restored if draw_figures else [])
    except ZooError:  # bad input found once the folder was made: leave no folder that holds only settings.json
        if writes and resume is None and [path.name for path in run_dir.iterdir()] == ["settings.json"]:
            shutil.rmtree(run_dir)
        raise


def _run_rows(family, rows, dataset, setup, settings, config, finished, run_dir, writes, budget, fast,
              draw_figures, arviz, restored=()) -> "Comparison":
    """Fit and score every row, writing the table, parameters and figures into ``run_dir`` as rows finish;
    the ``restored`` rows (finished before a resume) are rebuilt from ``fits/`` for the figures."""
    replicas = distributed.world()
    reference = None
    if family.scoring.reference is not None:
        reference = family.scoring.reference(dataset, setup, fast=fast, progress=settings.progress)
    sites = compared_sites(setup, dataset, reference)
    result = Comparison(pd.DataFrame(), {}, dataset, reference, setup=setup, run_dir=run_dir,
                        config_columns=tuple(dict.fromkeys(["model"] + list(_flat_config(config)))))
    records = list(finished)
    result.table = pd.DataFrame(records)
    for row in restored:
        path = run_dir / "fits" / f"{row.name}.pt"
        if path.is_file():
            saved = torch.load(path, weights_only=False)
            result.fits[row.name] = fit_choice(row, family, setup, dataset, settings, restore=saved)
            if saved.get("draws") is not None:
                result.draws[row.name] = saved["draws"]
    checkpoint_dir = None if run_dir is None else run_dir / "checkpoints"
    try:
        for row in rows:
            record = _run_row(row, family, setup, dataset, settings, reference, sites, budget, result, checkpoint_dir)
            fitted = result.fits.get(record["guide"])
            # a row carries the settings it ran with (epochs become steps; an IWAE row has its own ELBO)
            row_config = config if fitted is None else {**config, "settings": fitted.settings.to_dict()}
            records.append({"model": family.name, **record, **_flat_config(row_config)})
            result.table = pd.DataFrame(records)
            if writes:
                write_table(run_dir, result.table)
                if fitted is not None:
                    atomic_torch_save(fitted.parameters(), run_dir / "parameters" / f"{record['guide']}.pt")
                    atomic_torch_save({**fitted.saved, "draws": result.draws.get(record["guide"])},
                                      run_dir / "fits" / f"{record['guide']}.pt")
                    if arviz and sites:
                        write_inference_data(fitted, sites, budget.num_eval_samples,
                                             run_dir / "inference_data" / f"{record['guide']}.nc")
    except KeyboardInterrupt:
        result.interrupted = True
    if draw_figures and result.fits and replicas.is_main:
        result.figures = _figures(family, result, sites)
        if writes:
            for figure_name, figure in result.figures.items():
                save_figure(figure, run_dir / f"{figure_name}.png")
    return result


def _resumed_rows(run_dir: Path, config: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The finished rows of an interrupted run in ``run_dir``, after checking that it was made with ``config``."""
    path = run_dir / "settings.json"
    if not path.is_file():
        raise ZooError(f"--resume {os.fspath(run_dir)!r} is not a run folder (no settings.json); pass the folder "
                       "an interrupted run printed as 'results:'.")
    try:
        stored = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ZooError(f"--resume {os.fspath(run_dir)!r}: its settings.json cannot be read ({first_line(error)}); "
                       "the folder is damaged: start a new run.") from None
    new = json.loads(json.dumps(config, default=str))
    differing = sorted(key for key in set(stored) | set(new) if key not in RESUMABLE_CHANGES and stored.get(key) != new.get(key))
    if differing:
        raise ZooError(f"--resume {os.fspath(run_dir)!r} was run with other {', '.join(differing)}; resume it with the "
                       "same model, data and settings (see its settings.json).")
    results = run_dir / "results.csv"
    if not results.is_file():
        return []
    try:
        table = pd.read_csv(results)
        return table[table["status"] == "ok"].to_dict("records")
    except (OSError, ValueError, KeyError, pd.errors.ParserError) as error:  # EmptyDataError is a ValueError
        raise ZooError(f"--resume {os.fspath(run_dir)!r}: its results.csv cannot be read ({first_line(error)}); "
                       "move it aside to fit every guide again, or start a new run.") from None


def _run_row(row, family, setup, dataset, settings, reference, sites, budget, result,
             checkpoint_dir: Optional[Path] = None) -> Dict[str, Any]:
    if isinstance(row, str):  # a baseline
        start = time.perf_counter()
        baseline = family.scoring.baselines[row](dataset, setup, settings)
        result.baselines[row] = baseline
        return {"guide": row, "status": "ok", "wall_time_s": time.perf_counter() - start, **baseline.row}
    try:
        fitted = fit_choice(row, family, setup, dataset, settings, checkpoint_dir)
    except DivergenceError as error:
        print(f"{family.name}/{row.name} diverged: {error}", file=sys.stderr)
        return {"guide": row.name, "status": "diverged", "error": str(error)}
    except ZooError:  # bad input stops the run with its one line
        raise
    except Exception as error:  # one guide's failure is its row's, not the comparison's: the others run
        reason = str(error) if isinstance(error, FitFailure) else first_line(error)
        print(f"{family.name}/{row.name} failed: {reason}", file=sys.stderr)
        return {"guide": row.name, "status": "failed", "error": reason}
    try:
        scores = family.scoring.score(fitted, dataset, reference, sites, budget, result.draws)
    except ZooError:
        raise
    except Exception as error:  # the fit ran but could not be scored: its row fails, the others go on
        reason = f"scoring failed: {first_line(error)}"
        print(f"{family.name}/{row.name} {reason}", file=sys.stderr)
        return {"guide": row.name, "status": "failed", "error": reason}
    result.fits[row.name] = fitted
    return {"guide": row.name, "status": "ok", **scores}


def write_inference_data(fitted: FitResult, sites, num_samples: int, path: Path) -> None:
    """One fit's draws as ArviZ InferenceData in netCDF, written atomically."""
    inference_data = fitted.to_inference_data(num_samples, sites)
    atomic_write(path, lambda temporary: inference_data.to_netcdf(temporary))


def check_guide_sites(choice: GuideChoice, setup: Setup, dataset) -> None:
    """A user's guide callable must take the model's arguments and sample exactly the model's latent sites,
    each with its shape and event dimensions; a clear error otherwise."""
    if choice.name in setup.guides or choice.name in AUTO_GUIDES:
        return
    model_sites = _site_shapes(setup.model, dataset.train)
    try:
        with pyro.get_param_store().scope(), pyro.settings.context(module_local_params=True):
            guide_sites = _site_shapes(choice.build(), dataset.train)
    except Exception as error:  # the user's code: any failure is reported as what it is
        raise ZooError(f"calling guide {choice.name!r}(*data) failed with {first_line(error)}; a guide takes the "
                       "model's arguments and samples each of its latent sites.") from None
    if set(guide_sites) != set(model_sites):
        missing, extra = sorted(set(model_sites) - set(guide_sites)), sorted(set(guide_sites) - set(model_sites))
        raise ZooError(f"guide {choice.name!r} does not match the model's latent sites: missing {missing}, "
                       f"extra {extra}; a guide samples every latent site of the model, under the same names.")
    for name, (shape, event_dim) in model_sites.items():
        if guide_sites[name][0] != shape:
            raise ZooError(f"guide {choice.name!r} samples site {name!r} with shape {guide_sites[name][0]}, but the "
                           f"model's has shape {shape}.")
        if guide_sites[name][1] != event_dim:
            raise ZooError(f"guide {choice.name!r} samples site {name!r} with {guide_sites[name][1]} event "
                           f"dimension(s), but the model's has {event_dim}: use .to_event({event_dim}) as the model does.")
    try:
        with pyro.get_param_store().scope(), pyro.settings.context(module_local_params=True), torch.no_grad(), \
                pyro.poutine.block(), pyro.plate("_draws", 3, dim=-(setup.max_plate_nesting + 1)):
            pyro.poutine.trace(choice.build()).get_trace(*dataset.train)
    except Exception as error:
        raise ZooError(f"guide {choice.name!r} fails when its draws are batched on the left, as the runner draws "
                       f"particles ({first_line(error)}); it must broadcast over leading dimensions "
                       "(e.g. (x * weight).sum(-1) instead of x @ weight).") from None


def _site_shapes(fn, args) -> Dict[str, Tuple[Tuple[int, ...], int]]:
    """Each latent site of ``fn``: its value's shape and its distribution's event dimensions."""
    return {name: (tuple(site["value"].shape), site["fn"].event_dim)
            for name, site in model_trace(fn, args).nodes.items() if is_latent(site)}


def compared_sites(setup: Setup, dataset, reference) -> List[str]:
    """The sites whose posteriors are compared: the reference's, else the setup's, else every latent site."""
    if reference is not None:
        return list(reference.sites)
    present = latent_sites(setup.score_model or setup.model, dataset.train)
    wanted = setup.compared_sites if setup.compared_sites is not None else present
    return [site for site in wanted if site in present]


def _figures(family: Family, result: Comparison, sites) -> Dict[str, Any]:
    from . import plots

    figures = {"elbo_traces": plots.elbo_traces({name: fit.losses for name, fit in result.fits.items()},
                                                 title=f"{family.name}: SVI loss (negative ELBO)")}
    if result.draws and sites:
        figures["marginals"] = plots.marginals(result.draws, sites, result.reference)
    if family.scoring.figures is not None:
        figures.update(family.scoring.figures(result))
    return figures


def _configuration(family, dataset, settings, data_options, model_options, setup) -> Dict[str, Any]:
    return {
        "model": family.name,
        "dataset": dataset.name,
        "num_train": dataset.num_train,
        "num_test": dataset.num_test,
        "settings": settings.to_dict(),
        "data_options": dict(data_options or {}),
        "model_options": dict(model_options or {}),
        "model_kwargs": {k: v for k, v in setup.model_kwargs.items() if isinstance(v, (int, float, str, bool, type(None)))},
        "torch": torch.__version__,
        "processes": distributed.world().size,
    }


def _flat_config(config: Dict[str, Any]) -> Dict[str, Any]:
    flat = {k: v for k, v in config.items() if not isinstance(v, dict)}
    for group in ("settings", "data_options", "model_options", "model_kwargs"):
        # an option named like a column (``--dataset uci:yacht`` beside "dataset") keeps both
        flat.update({(f"{key}_option" if key in flat else key): value for key, value in config[group].items()})
    flat.pop("progress", None)
    flat["elbo_kind"] = flat.pop("elbo")  # the column "elbo" holds the estimate
    return flat
