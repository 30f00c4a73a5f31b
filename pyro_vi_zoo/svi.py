"""The SVI loop: one call fits one guide to one model and returns a :class:`FitResult`.

It follows Pyro's PyTorch-native idiom (``examples/svi_torch.py``): the ELBO is
an ``nn.Module`` built by ``elbo(model, guide)``, one warm-up call creates the
guide's lazy parameters, then a plain ``torch.optim`` optimiser runs. Each fit
has its own parameters: auto guides keep theirs module-locally
(``module_local_params=True``) and hand-written guides' ``pyro.param`` values live
in a param-store scope owned by the result, so two fits in one process never
share a parameter. The loop reads the loss back from the device only every
``log_every`` steps, where it also checks that the loss is finite.
"""

import contextlib
import dataclasses
import functools
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import pyro
import torch
from pyro import infer
from pyro.poutine.util import site_is_subsample
from tqdm.auto import tqdm

from .devices import resolve_device
from .errors import DivergenceError, ZooError
from .guides.auto import GuideInfo, get_guide_info
from .registry import ModelSpec, get_spec

ELBOS: Dict[str, Callable] = {
    "trace": infer.Trace_ELBO,
    "meanfield": infer.TraceMeanField_ELBO,
    "tracegraph": infer.TraceGraph_ELBO,
    "enum": infer.TraceEnum_ELBO,
    "renyi": functools.partial(infer.RenyiELBO, alpha=0.5),
    "jit": infer.JitTrace_ELBO,
    "jit_meanfield": infer.JitTraceMeanField_ELBO,
    "jit_enum": infer.JitTraceEnum_ELBO,
}
OPTIMIZERS = ("adam", "clipped_adam")


@dataclass
class FitSettings:
    """How to fit. Every field has a command-line flag of the same name in kebab case.

    ``lr_decay`` is the final learning rate as a fraction of ``lr`` (exponential
    decay over ``steps``; 1.0 keeps it constant). ``restarts`` > 1 fits from that
    many initialisations (seeds ``seed``, ``seed + 1``, ...) for a pilot of
    ``steps // 10`` steps each and continues the one with the best ELBO, the
    usual cure for mixtures' bad local optima. ``batch_size`` turns on minibatch
    SVI through the model's ``subsample_size``. ``validate`` checks distribution
    arguments at every step, not only at the warm-up call (slower; a divergence is
    caught either way, by the finite-loss check every ``log_every`` steps).
    """

    steps: int = 1500
    lr: float = 0.05
    lr_decay: float = 0.1
    optimizer: str = "adam"
    clip_norm: float = 10.0
    elbo: str = "trace"
    num_particles: int = 1
    batch_size: Optional[int] = None
    restarts: int = 1
    seed: int = 0
    device: str = "auto"
    log_every: int = 50
    validate: bool = False
    progress: bool = True

    def replace(self, **changes) -> "FitSettings":
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ZooError(f"unknown fit setting(s) {sorted(unknown)}; valid: {sorted(self.to_dict())}.")
        return dataclasses.replace(self, **changes).validated()

    def validated(self) -> "FitSettings":
        _require(self.steps >= 1, f"steps must be a positive integer, got {self.steps}.")
        _require(self.lr > 0 and math.isfinite(self.lr), f"lr must be positive and finite, got {self.lr}.")
        _require(0 < self.lr_decay <= 1, f"lr_decay must lie in (0, 1], got {self.lr_decay}.")
        _require(self.num_particles >= 1, f"num_particles must be at least 1, got {self.num_particles}.")
        _require(self.restarts >= 1, f"restarts must be at least 1, got {self.restarts}.")
        _require(self.log_every >= 1, f"log_every must be at least 1, got {self.log_every}.")
        _require(self.batch_size is None or self.batch_size >= 1, f"batch_size must be positive, got {self.batch_size}.")
        _require(self.elbo in ELBOS, f"unknown elbo {self.elbo!r}; choose one of: {', '.join(ELBOS)}.")
        _require(self.optimizer in OPTIMIZERS, f"unknown optimizer {self.optimizer!r}; choose one of: {', '.join(OPTIMIZERS)}.")
        return self

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


def _require(condition, message):
    if not condition:
        raise ZooError(message)


@dataclass
class FitResult:
    """A fitted guide and how it got there.

    ``model`` and ``guide`` are bound to their keywords; ``args`` are the training
    data on ``device``. Use :meth:`activate` around any call of ``guide`` made
    outside this object's methods, so that it sees its own parameters.
    """

    model_name: str
    guide_name: str
    model: Callable
    guide: Callable
    args: Tuple[torch.Tensor, ...]
    losses: np.ndarray
    wall_time: float
    device: torch.device
    settings: FitSettings
    guide_info: GuideInfo
    max_plate_nesting: int = 1
    param_state: Dict[str, Any] = field(default_factory=lambda: {"params": {}, "constraints": {}})
    module_local: bool = True

    def activate(self):
        """Make this fit's parameters the ones Pyro sees (module-local and param-store scoped)."""
        return parameter_scope(self.param_state, self.module_local)

    @property
    def steps_per_second(self) -> float:
        return len(self.losses) / self.wall_time if self.wall_time > 0 else float("nan")

    @property
    def final_loss(self) -> float:
        """Mean loss over the last tenth of the steps (a smoothed final negative ELBO)."""
        tail = self.losses[-max(1, len(self.losses) // 10):]
        return float(np.mean(tail))

    def parameters(self) -> Dict[str, torch.Tensor]:
        """The fitted variational parameters, constrained, detached, on the CPU."""
        out = {name: value.detach().cpu() for name, value in self.param_state["params"].items()}
        constraints = self.param_state["constraints"]
        for name, constraint in constraints.items():
            out[name] = torch.distributions.transform_to(constraint)(out[name])
        if isinstance(self.guide, torch.nn.Module):
            with self.activate():
                out.update(_module_values(self.guide))
        return out

    def sample_posterior(self, num_samples: int, sites=None) -> Dict[str, torch.Tensor]:
        """``num_samples`` draws of the latent sites from the guide, each of shape ``(num_samples, *site_shape)``."""
        shapes = latent_site_shapes(self.model, self.args)
        sites = list(sites) if sites is not None else list(shapes)
        with self.activate(), torch.no_grad():
            trace = pyro.poutine.trace(self._vectorized(self.guide, num_samples)).get_trace(*self.args)
        return {site: trace.nodes[site]["value"].reshape((num_samples,) + shapes[site]) for site in sites}

    def vectorized_trace(self, *args, num_samples: int, **kwargs):
        """A model trace at ``args`` with ``num_samples`` guide draws batched along dim ``-(max_plate_nesting + 1)``.

        Observed sites' ``fn`` is then the likelihood under every draw at once:
        the basis of held-out scores and predictive draws.
        """
        with self.activate(), torch.no_grad():
            guide_trace = pyro.poutine.trace(self._vectorized(self.guide, num_samples)).get_trace(*args, **kwargs)
            replayed = pyro.poutine.replay(self._vectorized(self.model, num_samples), trace=guide_trace)
            return pyro.poutine.trace(replayed).get_trace(*args, **kwargs)

    def predictive(self, *args, num_samples: int, return_sites=("y",), **kwargs) -> Dict[str, torch.Tensor]:
        """Posterior predictive draws of ``return_sites`` at new model arguments (leading dim: the draws)."""
        trace = self.vectorized_trace(*args, num_samples=num_samples, **kwargs)
        return {site: trace.nodes[site]["value"] for site in return_sites}

    def _vectorized(self, fn, num_samples):
        def vectorized(*args, **kwargs):
            with pyro.plate("_num_posterior_samples", num_samples, dim=-(self.max_plate_nesting + 1)):
                return fn(*args, **kwargs)

        return vectorized


@contextlib.contextmanager
def parameter_scope(param_state: Dict[str, Any], module_local: bool = True):
    """Pyro sees the parameters of one fit only: its own param-store state, module-local or not."""
    with pyro.settings.context(module_local_params=module_local):
        with pyro.get_param_store().scope(param_state):
            yield


def _module_values(module: torch.nn.Module) -> Dict[str, torch.Tensor]:
    values = {}
    for name, _ in module.named_parameters():
        name = name[: -len("_unconstrained")] if name.endswith("_unconstrained") else name
        value = functools.reduce(getattr, name.split("."), module)
        values[name] = value.detach().cpu()
    return values


def latent_site_shapes(model: Callable, args: Tuple, kwargs=None) -> Dict[str, Tuple[int, ...]]:
    """The model's latent sample sites (not observed, not subsample sites) and their shapes, in trace order."""
    with torch.no_grad(), pyro.poutine.block():
        trace = pyro.poutine.trace(model).get_trace(*args, **(kwargs or {}))
    return {
        name: tuple(site["value"].shape)
        for name, site in trace.nodes.items()
        if site["type"] == "sample" and not site["is_observed"] and not site_is_subsample(site)
    }


def latent_sites(model: Callable, args: Tuple, kwargs=None) -> List[str]:
    """Names of the model's latent sample sites, in trace order."""
    return list(latent_site_shapes(model, args, kwargs))


def make_elbo(settings: FitSettings, max_plate_nesting: int):
    """The ELBO object that ``settings.elbo`` names, with vectorised particles when there are several."""
    vectorize = settings.num_particles > 1 and settings.elbo != "tracegraph"
    kwargs = dict(num_particles=settings.num_particles, vectorize_particles=vectorize, max_plate_nesting=max_plate_nesting)
    if settings.elbo.startswith("jit"):
        kwargs["ignore_jit_warnings"] = True
    return ELBOS[settings.elbo](**kwargs)


class SVIStep:
    """One SVI step for a model and guide: loss, backward, (clipping), optimiser and schedule.

    ``build_guide()`` makes the guide inside this step's own parameter scope
    (module-local parameters must exist at construction). Building the step runs
    the warm-up call that creates the guide's parameters; calling
    it makes one step and returns the loss as a detached tensor on the device, with
    no host synchronisation of its own. Build and call it inside ``scope``.
    """

    def __init__(self, model, build_guide, args, kwargs, settings: FitSettings, max_plate_nesting: int):
        self.args, self.kwargs, self.settings = args, kwargs, settings
        self.param_state = {"params": {}, "constraints": {}}
        # Pyro's JIT finds parameters by name in the param store, so JIT ELBOs keep module
        # parameters there; the scope still gives every fit a store of its own.
        self.module_local = not settings.elbo.startswith("jit")
        with self.scope():
            self.model, self.guide = model, build_guide()
            self.elbo = make_elbo(settings, max_plate_nesting)
            # ELBOs with a differentiable loss run as an nn.Module; the others
            # (TraceGraph, Rényi) compute their own surrogate gradients
            self.differentiable = hasattr(self.elbo, "differentiable_loss")
            self.loss_fn = self.elbo(model, self.guide) if self.differentiable else None
            self._loss()  # the warm-up call creates the guide's lazy parameters
            self.params = self._collect_parameters()
        if not self.params:
            raise ZooError("the guide has no parameters to fit; check that it calls pyro.param or is an AutoGuide.")
        self.optimizer = _adam(self.params, settings.lr)
        gamma = settings.lr_decay ** (1.0 / settings.steps)
        self.schedule = torch.optim.lr_scheduler.ExponentialLR(self.optimizer, gamma=gamma) if gamma < 1 else None

    def _collect_parameters(self):
        store = pyro.get_param_store()
        modules = [module for module in (self.model, self.guide) if isinstance(module, torch.nn.Module)]
        candidates = [p for module in modules for p in module.parameters()]
        candidates += [store[name].unconstrained() for name in store.keys()]
        return list({id(p): p for p in candidates}.values())

    def _loss(self) -> torch.Tensor:
        if self.differentiable:
            return self.loss_fn(*self.args, **self.kwargs)
        with torch.no_grad():
            return torch.as_tensor(self.elbo.loss(self.model, self.guide, *self.args, **self.kwargs))

    def scope(self):
        return parameter_scope(self.param_state, self.module_local)

    def __call__(self) -> torch.Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        if self.differentiable:
            loss = self.loss_fn(*self.args, **self.kwargs)
            loss.backward()
        else:
            loss = torch.as_tensor(self.elbo.loss_and_grads(self.model, self.guide, *self.args, **self.kwargs))
        if self.settings.optimizer == "clipped_adam":
            torch.nn.utils.clip_grad_norm_(self.params, self.settings.clip_norm)
        self.optimizer.step()
        if self.schedule is not None:
            self.schedule.step()
        return loss.detach()


def _adam(params, lr):
    """Adam, fused into one kernel where this torch and device allow (the per-parameter loop costs more than the maths)."""
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.Adam(params, lr=lr)


def run_steps(step: SVIStep, num_steps: int, losses: torch.Tensor, start: int, bar=None) -> None:
    """Run ``num_steps`` steps, writing losses into ``losses[start:]``; check finiteness every ``log_every``."""
    log_every = step.settings.log_every
    checked = start
    # the warm-up call validated every distribution; re-checking them at each step costs a quarter of the step
    with step.scope(), pyro.validation_enabled(step.settings.validate):
        for index in range(start, start + num_steps):
            try:
                losses[index] = step()
            except ValueError as error:  # distribution validation refusing NaN parameters
                if all(bool(torch.isfinite(p).all()) for p in step.params):
                    raise
                raise DivergenceError(index, _divergence_message(f"the parameters became non-finite at step {index}",
                                                                 step.settings)) from error
            if index + 1 - checked >= log_every or index + 1 == start + num_steps:
                _check_finite(losses, checked, index + 1, step.settings)
                if bar is not None:
                    bar.update(index + 1 - checked)
                    bar.set_postfix(loss=f"{float(losses[checked:index + 1].mean()):.4g}", refresh=False)
                checked = index + 1


def _check_finite(losses: torch.Tensor, start: int, stop: int, settings: FitSettings) -> None:
    window = losses[start:stop]
    finite = torch.isfinite(window)
    if bool(finite.all()):
        return
    first = start + int((~finite).nonzero()[0, 0])
    raise DivergenceError(first, _divergence_message(f"the loss became {float(losses[first])} at step {first}", settings))


def _divergence_message(what: str, settings: FitSettings) -> str:
    return (f"{what}; try a smaller --lr (now {settings.lr}), --optimizer clipped_adam, "
            "more --num-particles, or check the data for extreme values.")


def fit(
    model,
    guide: str = "mean_field",
    data=None,
    *,
    data_options: Optional[Dict[str, Any]] = None,
    model_options: Optional[Dict[str, Any]] = None,
    settings: Optional[FitSettings] = None,
    **overrides,
) -> FitResult:
    """Fit one guide to one model by SVI.

    Args:
        model: a registry name (``"bayes_regression"``) or a :class:`ModelSpec`.
        guide: ``"mean_field"`` (the hand-written guide) or an auto-guide name.
        data: ``None`` for the model's embedded default, or what its loader takes
            (arrays such as ``(x, y)``, a path, a :class:`~pyro_vi_zoo.data.Dataset`).
        data_options, model_options: model-specific options (see ``--list``).
        settings: a :class:`FitSettings`; keyword ``overrides`` replace its fields
            (``steps=500, lr=0.01, device="cpu"``).

    Returns:
        A :class:`FitResult` with the guide, its parameters, the loss trace and timing.
    """
    spec = get_spec(model)
    settings = resolve_settings(spec, settings, overrides)
    dataset, model_kwargs = prepare(spec, data, settings, data_options, model_options)
    return fit_prepared(spec, guide, dataset, model_kwargs, settings)


def resolve_settings(spec: ModelSpec, settings: Optional[FitSettings], overrides: Dict[str, Any]) -> FitSettings:
    """The spec's default settings, then ``settings``' explicit fields, then ``overrides``."""
    base = FitSettings().replace(**spec.settings)
    if settings is not None:
        defaults = FitSettings().to_dict()
        chosen = {k: v for k, v in settings.to_dict().items() if v != defaults[k]}
        base = base.replace(**chosen)
    return base.replace(**overrides)


def prepare(spec: ModelSpec, data, settings: FitSettings, data_options=None, model_options=None):
    """Load ``data`` for ``spec``, move it to the settings' device once, and derive the model keywords."""
    device = resolve_device(settings.device)
    dataset = data if _is_dataset(data) else spec.load_data(data, **(data_options or {}))
    dataset = dataset.to(device)
    return dataset, spec.model_kwargs(dataset, **(model_options or {}))


def _is_dataset(data) -> bool:
    from .data import Dataset

    return isinstance(data, Dataset)


def fit_prepared(spec: ModelSpec, guide_name: str, dataset, model_kwargs: Dict[str, Any], settings: FitSettings) -> FitResult:
    """Fit ``guide_name`` on an already prepared data set (the runner's entry point)."""
    info = get_guide_info(guide_name)
    model, build_guide, train_kwargs = svi_parts(spec, guide_name, dataset, model_kwargs, settings)
    settings = with_enumeration(settings, model, dataset.train)
    start = time.perf_counter()
    step, losses = _best_start(model, build_guide, dataset.train, train_kwargs, settings, spec, info)
    wall_time = time.perf_counter() - start
    guide = step.guide
    if info.finalize is not None:
        with step.scope():
            guide = info.finalize(guide, *dataset.train)
    return FitResult(
        model_name=spec.name,
        guide_name=info.name,
        model=model if spec.score_model is None else spec.score_model(dataset, model_kwargs),
        guide=guide,
        args=dataset.train,
        losses=losses.cpu().numpy(),
        wall_time=wall_time,
        device=dataset.train[0].device,
        settings=settings,
        guide_info=info,
        max_plate_nesting=spec.max_plate_nesting,
        param_state=step.param_state,
        module_local=step.module_local,
    )


def svi_parts(spec: ModelSpec, guide_name: str, dataset, model_kwargs, settings: FitSettings):
    """The bound model, a guide factory and the training-only keywords (minibatch size) for one fit."""
    info = get_guide_info(guide_name)
    model = spec.bind_model(dataset, model_kwargs)
    if info.build is None:
        build_guide = lambda: spec.bind_guide(dataset, model_kwargs)
    else:
        # auto guides cover the continuous latents; enumerated discrete sites are summed out by the ELBO
        guide_model = pyro.poutine.block(model, hide_fn=_is_enumerated)
        init = (lambda: {}) if spec.auto_guide_init is None else (
            lambda: {"init_loc_fn": spec.auto_guide_init(dataset, model_kwargs)})
        build_guide = lambda: info.build(guide_model, **init())
    train_kwargs = {}
    if settings.batch_size is not None:
        if spec.subsample_kwarg is None:
            raise ZooError(f"model {spec.name!r} does not support minibatches; drop --batch-size.")
        train_kwargs[spec.subsample_kwarg] = min(settings.batch_size, dataset.num_train)
    return model, build_guide, train_kwargs


ENUMERATING_ELBOS = {"trace": "enum", "jit": "jit_enum"}


def _is_enumerated(msg) -> bool:
    return msg["type"] == "sample" and msg["infer"].get("enumerate") == "parallel"


def with_enumeration(settings: FitSettings, model, args) -> FitSettings:
    """``settings`` with ``trace``/``jit`` turned into ``enum``/``jit_enum`` when the model marks
    sites for parallel enumeration (``infer={"enumerate": "parallel"}``), which only
    TraceEnum_ELBO sums out; otherwise ``settings`` unchanged."""
    if settings.elbo not in ENUMERATING_ELBOS:
        return settings
    with torch.no_grad(), pyro.poutine.block():
        trace = pyro.poutine.trace(model).get_trace(*args)
    if any(_is_enumerated(site) for site in trace.nodes.values()):
        return settings.replace(elbo=ENUMERATING_ELBOS[settings.elbo])
    return settings


def make_svi_step(spec: ModelSpec, guide_name: str, dataset, model_kwargs, settings: FitSettings) -> SVIStep:
    """The :class:`SVIStep` that :func:`fit_prepared` would run (for benchmarks and custom loops)."""
    model, build_guide, train_kwargs = svi_parts(spec, guide_name, dataset, model_kwargs, settings)
    settings = with_enumeration(settings, model, dataset.train)
    pyro.set_rng_seed(settings.seed)
    return SVIStep(model, build_guide, dataset.train, train_kwargs, settings, spec.max_plate_nesting)


def _best_start(model, build_guide, args, kwargs, settings, spec, info):
    """Run the restarts' pilots, keep the best by mean pilot loss, and finish its fit."""
    device = args[0].device
    pilot = settings.steps if settings.restarts == 1 else max(1, settings.steps // 10)
    total = pilot * settings.restarts + settings.steps - pilot
    bar = tqdm(total=total, desc=f"{spec.name}/{info.name}", disable=not settings.progress, leave=False)
    candidates = []
    try:
        for restart in range(settings.restarts):
            pyro.set_rng_seed(settings.seed + restart)
            step = SVIStep(model, build_guide, args, kwargs, settings, spec.max_plate_nesting)
            losses = torch.empty(settings.steps, device=device)
            run_steps(step, pilot, losses, 0, bar)
            candidates.append((float(losses[pilot - max(1, pilot // 5):pilot].mean()), restart, step, losses))
        _, _, step, losses = min(candidates, key=lambda c: (c[0] if math.isfinite(c[0]) else math.inf, c[1]))
        run_steps(step, settings.steps - pilot, losses, pilot, bar)
    finally:
        bar.close()
    return step, losses
