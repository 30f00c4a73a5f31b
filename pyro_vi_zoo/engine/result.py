"""What a fit returns: the fitted guide, its parameters, the loss trace, and posterior draws from it."""

import contextlib
import functools
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.poutine.subsample_messenger import SubsampleMessenger
from pyro.poutine.util import site_is_subsample

from ..errors import ZooError
from .settings import FitSettings


@dataclass
class FitResult:
    """A fitted guide and how it got there (the shape of NumPyro's ``SVIRunResult``).

    ``model`` and ``guide`` are bound to their keywords; ``args`` are the training
    data on ``device``; ``score_model`` is the model the guide is scored against
    (the trained one, or the same joint with enumerated sites summed out). Use
    :meth:`activate` around any call of ``guide`` made outside this object's
    methods, so that it sees its own parameters.
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
    has_density: bool = True
    max_plate_nesting: int = 1
    score_model: Optional[Callable] = None
    param_state: Dict[str, Any] = field(default_factory=lambda: {"params": {}, "constraints": {}})
    module_local: bool = True
    #: what rebuilds this fit without training (``fit_guide(..., restore=saved)``): the trained parameters
    #: before any finalize step, the losses and the wall time
    saved: Optional[Dict[str, Any]] = field(default=None, repr=False)

    def __post_init__(self):
        if self.score_model is None:
            self.score_model = self.model

    def __repr__(self) -> str:  # not the data set, the losses and the parameters, which a notebook would print whole
        return (f"FitResult({self.model_name!r}, guide={self.guide_name!r}, steps={len(self.losses)}, "
                f"final_loss={self.final_loss:.6g}, wall_time={self.wall_time:.3g}s, device={str(self.device)!r})")

    @contextlib.contextmanager
    def activate(self):
        """Make this fit's parameters the ones Pyro sees (module-local and param-store scoped), for evaluation:
        a plate that draws its own minibatch takes every row (scores and draws cover the whole data set)."""
        with parameter_scope(self.param_state, self.module_local), every_row():
            yield

    @property
    def steps_per_second(self) -> float:
        return len(self.losses) / self.wall_time if self.wall_time > 0 else float("nan")

    @property
    def final_loss(self) -> float:
        """Mean loss over the last tenth of the steps (a smoothed final negative ELBO)."""
        tail = self.losses[-max(1, len(self.losses) // 10):]
        return float(np.mean(tail))

    def parameters(self) -> Dict[str, torch.Tensor]:
        """The fitted variational parameters, detached, on the CPU: param-store entries and a guide module's
        parameters constrained as declared (a guide that maps a raw parameter itself, say by softplus, keeps
        the raw one), and the module's buffers."""
        out = {name: value.detach().cpu() for name, value in self.param_state["params"].items()}
        for name, constraint in self.param_state["constraints"].items():
            out[name] = torch.distributions.transform_to(constraint)(out[name])
        if isinstance(self.guide, torch.nn.Module):
            with self.activate():
                out.update(_module_values(self.guide))
        return out

    def sample_posterior(self, num_samples: int, sites=None) -> Dict[str, torch.Tensor]:
        """``num_samples`` draws of the latent sites (all, one name, or several) from the guide, each of shape
        ``(num_samples, *site_shape)``."""
        if num_samples < 1:
            raise ZooError(f"num_samples must be at least 1, got {num_samples}.")
        shapes = latent_site_shapes(self.score_model, self.args)
        sites = [sites] if isinstance(sites, str) else list(sites) if sites is not None else list(shapes)
        unknown = [site for site in sites if site not in shapes]
        if unknown:
            raise ZooError(f"no latent site named {', '.join(map(repr, unknown))} in {self.model_name}; its latent "
                           f"sites are: {', '.join(shapes)}.")
        with self.activate(), torch.no_grad():
            trace = pyro.poutine.trace(self._vectorized(self.guide, num_samples)).get_trace(*self.args)
        return {site: trace.nodes[site]["value"].detach().reshape((num_samples,) + shapes[site]) for site in sites}

    def to_inference_data(self, num_samples: int = 1000, sites=None, predictive: bool = True):
        """Guide draws as an ArviZ ``InferenceData`` (one chain): ``posterior`` holds ``sites`` (default:
        every latent site), ``posterior_predictive`` and ``observed_data`` the model's observed sites at
        the training data when ``predictive``. Needs the optional ``arviz`` extra."""
        try:
            import arviz
        except ImportError:
            from ..errors import ZooError

            raise ZooError("ArviZ export needs arviz: pip install arviz "
                           "(or the extra, pip install 'pyro_vi_zoo[arviz]').") from None
        draws = self.sample_posterior(num_samples, sites)
        as_numpy = lambda values: {name: value.detach().cpu().numpy()[None] for name, value in values.items()}
        groups = {"posterior": as_numpy(draws)}
        if predictive:
            trace = self.vectorized_trace(*self.args, num_samples=num_samples)
            observed = {name: site for name, site in trace.nodes.items() if is_observation(site)}
            with torch.no_grad():
                groups["posterior_predictive"] = as_numpy({name: site["fn"].sample().reshape((num_samples,) + tuple(
                    site["value"].shape)) for name, site in observed.items()})
            groups["observed_data"] = {name: site["value"].detach().cpu().numpy() for name, site in observed.items()}
        return arviz.from_dict(**groups)

    def vectorized_trace(self, *args, num_samples: int, **kwargs):
        """A model trace at ``args`` with ``num_samples`` guide draws batched along dim ``-(max_plate_nesting + 1)``.

        Observed sites' ``fn`` is then the likelihood under every draw at once:
        the basis of held-out scores and predictive draws.
        """
        with self.activate(), torch.no_grad():
            guide_trace = pyro.poutine.trace(self._vectorized(self.guide, num_samples)).get_trace(*args, **kwargs)
            replayed = pyro.poutine.replay(self._vectorized(self.score_model, num_samples), trace=guide_trace)
            return pyro.poutine.trace(replayed).get_trace(*args, **kwargs)

    def _vectorized(self, fn, num_samples):
        def vectorized(*args, **kwargs):
            with pyro.plate("_num_posterior_samples", num_samples, dim=-(self.max_plate_nesting + 1)):
                return fn(*args, **kwargs)

        return vectorized


@contextlib.contextmanager
def every_row():
    """Inside, a plate that draws its own minibatch (``subsample_size=``) takes all of its rows instead.

    Scores need the whole data set (every held-out row, the full-data ELBO and k̂) while a user's model may
    fix its minibatch inside. Pyro has no handler for this (a plate checks the rows it is given against the
    ``subsample_size`` it was built with), so the plate's subsampling helper is swapped for the duration.
    Rows given explicitly (``subsample=``) are kept.
    """
    original = SubsampleMessenger.__dict__.get("_subsample")
    signature = inspect.signature(original.__func__) if isinstance(original, staticmethod) else None
    if signature is None or not {"subsample", "subsample_size"} <= set(signature.parameters):
        yield  # another Pyro: plates then subsample as they were told
        return

    def whole(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        if bound.arguments.get("subsample") is None:
            bound.arguments["subsample_size"] = None
        return original.__func__(*bound.args, **bound.kwargs)

    SubsampleMessenger._subsample = staticmethod(whole)
    try:
        yield
    finally:
        SubsampleMessenger._subsample = original


@contextlib.contextmanager
def parameter_scope(param_state: Dict[str, Any], module_local: bool = True):
    """Pyro sees the parameters of one fit only: its own param-store state, module-local or not."""
    with pyro.settings.context(module_local_params=module_local):
        with pyro.get_param_store().scope(param_state):
            yield


def _module_values(module: torch.nn.Module) -> Dict[str, torch.Tensor]:
    """A guide module's parameters, constrained, and its buffers (a Laplace guide keeps its mean and
    covariance factors there)."""
    values = {}
    for name, _ in module.named_parameters():
        name = name[: -len("_unconstrained")] if name.endswith("_unconstrained") else name
        value = functools.reduce(getattr, name.split("."), module)
        values[name] = value.detach().cpu()
    values.update({name: value.detach().cpu() for name, value in module.named_buffers()})
    return values


def model_trace(model: Callable, args: Tuple, kwargs=None):
    """One trace of ``model`` at ``args``, without gradients and hidden from outer handlers."""
    with torch.no_grad(), pyro.poutine.block():
        return pyro.poutine.trace(model).get_trace(*args, **(kwargs or {}))


def is_enumerated(msg) -> bool:
    return msg["type"] == "sample" and msg["infer"].get("enumerate") == "parallel"


def is_latent(site) -> bool:
    """A latent sample site that a guide samples: not observed, not a subsample site, not enumerated (the
    ELBO sums those out), not a guide's auxiliary site (a draw the guide maps to the model's sites)."""
    return site["type"] == "sample" and not site["is_observed"] and not site_is_subsample(site) \
        and not is_enumerated(site) and not site["infer"].get("is_auxiliary", False)


def is_observation(site) -> bool:
    """An observed site that holds data: not ``pyro.deterministic`` (a point mass at a computed value) nor
    ``pyro.factor`` (a term added to the log density), which Pyro also records as observed."""
    if site["type"] != "sample" or not site["is_observed"] or site_is_subsample(site):
        return False
    fn = site["fn"]
    while hasattr(fn, "base_dist") and not isinstance(fn, (dist.Delta, dist.Unit)):
        fn = fn.base_dist
    return not isinstance(fn, (dist.Delta, dist.Unit))


def latent_site_shapes(model: Callable, args: Tuple, kwargs=None) -> Dict[str, Tuple[int, ...]]:
    """The model's latent sites (:func:`is_latent`) and their shapes, in trace order."""
    return {name: tuple(site["value"].shape)
            for name, site in model_trace(model, args, kwargs).nodes.items() if is_latent(site)}


def latent_sites(model: Callable, args: Tuple, kwargs=None) -> List[str]:
    """Names of the model's latent sample sites, in trace order."""
    return list(latent_site_shapes(model, args, kwargs))
