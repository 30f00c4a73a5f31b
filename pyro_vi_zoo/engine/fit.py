"""Fit one guide to one model: restarts, the progress bar, timing, and the caller's random state left alone.

The engine takes what it needs as arguments (a bound model, a guide factory,
training arguments, settings); it knows nothing of families or the registry.
"""

import contextlib
import math
import time
from typing import Callable, Dict, Optional, Tuple

import pyro
import torch
from pyro.util import get_rng_state, set_rng_state

from ..errors import ZooError
from .batches import EpochBatches
from .checkpoints import Checkpoints, fit_state, load_fit_state
from .distributed import rank_seed
from .result import FitResult, is_enumerated, model_trace
from .settings import FitSettings
from .step import SVIStep, run_steps

ENUMERATING_ELBOS = {"trace": "enum", "jit": "jit_enum"}


def fit_guide(
    model: Callable,
    build_guide: Callable[[], Callable],
    args: Tuple[torch.Tensor, ...],
    settings: FitSettings,
    *,
    train_kwargs: Optional[Dict] = None,
    max_plate_nesting: int = 1,
    model_name: str = "model",
    guide_name: str = "guide",
    has_density: bool = True,
    finalize: Optional[Callable] = None,
    score_model: Optional[Callable] = None,
    batches: Optional[EpochBatches] = None,
    checkpoints: Optional[Checkpoints] = None,
    restore: Optional[Dict] = None,
) -> FitResult:
    """Fit the guide that ``build_guide()`` makes to ``model(*args, **train_kwargs)`` by SVI.

    ``settings`` must be resolved (:func:`~pyro_vi_zoo.engine.settings.resolve_settings`).
    ``finalize(guide, *args)`` runs after SVI (Laplace turns MAP into a Gaussian
    there). ``batches`` trains by minibatch epochs (the step's arguments then come
    from it; ``args`` stay the full training data of the result). With
    ``settings.seed`` set the fit is reproducible and the caller's random state is
    restored afterwards. ``checkpoints`` writes the fit's state as it goes and, where a
    checkpoint exists, resumes from it (one start only: no restarts). ``restore`` (a finished fit's
    :attr:`FitResult.saved`) rebuilds that fit without training: a resumed run redraws its figures.
    """
    with seeded(settings.seed):
        settings = with_enumeration(settings, model, args)
        if restore is None:
            start = time.perf_counter()
            step, losses = _best_start(model, build_guide, args, train_kwargs or {}, settings, max_plate_nesting,
                                       f"{model_name}/{guide_name}", batches, checkpoints)
            wall_time = time.perf_counter() - start
            if checkpoints is not None:  # a resumed fit: its time before the checkpoint too
                wall_time += checkpoints.earlier_seconds
        else:
            step = _new_step(model, build_guide, args, train_kwargs or {}, settings, max_plate_nesting, batches)
            load_fit_state(step, restore["state"])
            losses, wall_time = torch.as_tensor(restore["losses"]), float(restore["wall_time"])
        losses = losses.cpu().numpy()
        saved = {"state": fit_state(step), "losses": losses, "wall_time": wall_time}
        guide = step.guide
        if finalize is not None:  # once, so on the data's device whatever torch's default (Pyro's plates take it)
            with step.scope(), torch.device(args[0].device):
                guide = finalize(guide, *args)
    return FitResult(
        model_name=model_name, guide_name=guide_name, model=model, guide=guide, args=args,
        losses=losses, wall_time=wall_time, device=args[0].device, settings=settings,
        has_density=has_density, max_plate_nesting=max_plate_nesting, score_model=score_model,
        param_state=step.param_state, module_local=step.module_local, saved=saved,
    )


@contextlib.contextmanager
def seeded(seed: Optional[int]):
    """Seed torch, numpy and random for the block, then give the caller back the state it had.

    ``None`` leaves the random state alone: the fit draws from the caller's stream.
    """
    if seed is None:
        yield
        return
    state = get_rng_state()
    cuda_state = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    pyro.set_rng_seed(seed)
    try:
        yield
    finally:
        set_rng_state(state)
        if cuda_state is not None:
            torch.cuda.set_rng_state_all(cuda_state)


def with_enumeration(settings: FitSettings, model, args) -> FitSettings:
    """``settings`` with ``trace``/``jit`` turned into ``enum``/``jit_enum`` when the model marks
    sites for parallel enumeration, which only TraceEnum_ELBO sums out; otherwise unchanged."""
    if settings.elbo not in ENUMERATING_ELBOS:
        return settings
    if any(is_enumerated(site) for site in model_trace(model, args).nodes.values()):
        return settings.replace(elbo=ENUMERATING_ELBOS[settings.elbo])
    return settings


def make_step(model, build_guide, args, settings: FitSettings, *, train_kwargs=None, max_plate_nesting=1,
              batches: Optional[EpochBatches] = None) -> SVIStep:
    """The :class:`SVIStep` that :func:`fit_guide` runs (for benchmarks and custom loops); seeds torch when asked."""
    settings = with_enumeration(settings, model, args)
    if settings.seed is not None:
        pyro.set_rng_seed(settings.seed)
    return _new_step(model, build_guide, args, train_kwargs or {}, settings, max_plate_nesting, batches)


def _best_start(model, build_guide, args, kwargs, settings, max_plate_nesting, label, batches=None, checkpoints=None):
    """Run the restarts' pilots, keep the best by mean pilot loss, and finish its fit."""
    from tqdm.auto import tqdm

    device = args[0].device
    pilot = settings.steps if settings.restarts == 1 else max(1, settings.steps // 10)
    total = pilot * settings.restarts + settings.steps - pilot
    bar = tqdm(total=total, desc=label, disable=not settings.progress, leave=False)
    candidates = []
    try:
        if checkpoints is not None:
            return _resumable(model, build_guide, args, kwargs, settings, max_plate_nesting, batches, checkpoints, bar)
        for restart in range(settings.restarts):
            if settings.seed is not None:
                pyro.set_rng_seed(settings.seed + restart)
            stream_seed = None if settings.seed is None else settings.seed + restart
            step = _new_step(model, build_guide, args, kwargs, settings, max_plate_nesting, batches, stream_seed)
            losses = torch.empty(settings.steps, device=device)
            run_steps(step, pilot, losses, 0, bar)
            candidates.append((pilot_score(losses[:pilot]), restart, step, losses))
        _, _, step, losses = min(candidates, key=lambda c: (c[0], c[1]))
        run_steps(step, settings.steps - pilot, losses, pilot, bar)
    finally:
        bar.close()
    return step, losses


def _resumable(model, build_guide, args, kwargs, settings, max_plate_nesting, batches, checkpoints, bar):
    """One start that writes checkpoints as it goes, continuing from the last one when there is one."""
    if settings.restarts != 1:
        raise ZooError("checkpoints follow one start: use restarts=1 with --resume and checkpointed runs.")
    step = _new_step(model, build_guide, args, kwargs, settings, max_plate_nesting, batches)
    losses = torch.empty(settings.steps, device=args[0].device)
    state = checkpoints.load()
    start = 0 if state is None else checkpoints.restore(step, losses, state)
    if start and step.world.rank > 0:  # the checkpoint holds rank 0's random state: give the others their own
        pyro.set_rng_seed(rank_seed(0 if settings.seed is None else settings.seed, step.world.rank, salt=start))
    bar.update(start)
    run_steps(step, settings.steps - start, losses, start, bar, checkpoints)
    checkpoints.remove()
    return step, losses


def _new_step(model, build_guide, args, kwargs, settings, max_plate_nesting, batches, stream_seed=None) -> SVIStep:
    """A fresh step (warm-up call included), fed by its own minibatch feeder when ``batches`` are given;
    ``stream_seed`` seeds the replicas' own random streams in a data-parallel fit."""
    feeder = batches.feeder() if batches is not None else None
    return SVIStep(model, build_guide, args, kwargs, settings, max_plate_nesting, feeder, stream_seed)


def pilot_score(losses: torch.Tensor) -> float:
    """Mean loss over the last fifth of a pilot run (+inf when not finite): lower is better."""
    tail = float(losses[len(losses) - max(1, len(losses) // 5):].mean())
    return tail if math.isfinite(tail) else math.inf
