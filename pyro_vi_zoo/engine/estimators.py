"""Gradient estimators Pyro lacks: sticking the landing, the plain score function, IWAE per example and DReG.

Both keep the ELBO's value and change only its gradient:

* ``STLTraceELBO`` (Roeder, Wu & Duvenaud 2017, "Sticking the landing"): the total derivative of
  log q(z(ε, φ); φ) has a path term and a score term, E_q[∇_φ log q(z; φ)] = 0. Dropping the score term
  keeps the estimator unbiased and makes its variance vanish as q reaches the posterior. Per guide site the
  surrogate is log q(z; φ) − log q(z̄; φ) + log q(z̄; φ)|detached, z̄ = z without gradient: the same value,
  the path gradient only. A point-mass site that maps a latent to its support (an auto guide's
  constrained site) has no score term: its log-density, −log|J|, is all path. Works for any reparameterised guide (hand-written, AutoNormal, the
  AutoContinuous family, flows); a site without ``rsample`` is refused.
* ``ScoreFunctionELBO`` (Williams 1992; Ranganath et al. 2014): every guide site is treated as
  non-reparameterised, so Trace_ELBO's surrogate (:func:`.elbos.surrogate_elbo`) is the REINFORCE
  estimator (with its Rao-Blackwellisation over plates) — the high-variance baseline of the
  reparameterisation trick.
"""

import functools
import math

import torch
from pyro.distributions import Delta
from pyro.distributions.torch_distribution import TorchDistribution
from pyro.distributions.util import scale_and_mask
from pyro.infer import Trace_ELBO
from pyro.infer.util import is_identically_zero
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample

from ..errors import ZooError
from .elbos import SyncFreeTraceELBO


class STLTraceELBO(SyncFreeTraceELBO):
    """Trace_ELBO with the sticking-the-landing gradient for reparameterised guide sites (no host sync)."""

    def _particle_loss(self, model_trace, guide_trace):
        for site in guide_trace.nodes.values():
            if site["type"] == "sample" and not site_is_subsample(site) and not site["fn"].has_rsample:
                raise ZooError(f"--elbo stl needs a reparameterised guide, but site {site['name']!r} samples "
                               f"from {type(site['fn']).__name__}, which has no rsample; use --elbo trace.")
        return super()._particle_loss(model_trace, guide_trace) - self._score_terms(guide_trace)

    @staticmethod
    def _score_terms(guide_trace) -> torch.Tensor:
        """Σ_sites log q(z̄; φ) − log q(z̄; φ)|detached: zero, with the score term's gradient; the loss
        (−ELBO, whose gradient holds +∇ log q) subtracts it."""
        total = 0.0
        for site in guide_trace.nodes.values():
            if site["type"] != "sample" or site_is_subsample(site):
                continue
            _, _, entropy_term = site["score_parts"]
            if is_identically_zero(entropy_term) or is_delta(site["fn"]):
                continue
            at_detached = site["fn"].log_prob(site["value"].detach())
            at_detached = scale_and_mask(at_detached, site["scale"], site["mask"]).sum()
            total = total + at_detached - at_detached.detach()
        return total


class _NoRsample(TorchDistribution):
    """A distribution without ``rsample``: its draws carry no path gradient (REINFORCE only)."""

    arg_constraints = {}
    has_rsample = False

    def __init__(self, base):
        self.base = base
        super().__init__(base.batch_shape, base.event_shape, validate_args=False)

    @property
    def support(self):
        return self.base.support

    def expand(self, batch_shape, _instance=None):
        return _NoRsample(self.base.expand(batch_shape))

    def sample(self, sample_shape=torch.Size()):
        with torch.no_grad():
            return self.base.sample(sample_shape)

    def log_prob(self, value):
        return self.base.log_prob(value)


class _ScoreFunctionGuide(Messenger):
    def _pyro_sample(self, msg):
        if not msg["is_observed"] and not site_is_subsample(msg) and msg["fn"].has_rsample:
            msg["fn"] = _NoRsample(msg["fn"])


class ScoreFunctionELBO(SyncFreeTraceELBO):
    """Trace_ELBO with every guide site's gradient estimated by the score function (REINFORCE); no host sync."""

    def _get_trace(self, model, guide, args, kwargs):
        return super()._get_trace(model, _ScoreFunctionGuide()(guide), args, kwargs)


class ImportanceWeightedELBO(Trace_ELBO):
    """The importance-weighted bound of Burda et al. (2016), per example, for models with local latents.

    With K vectorised particles, each example b gets log-weights log p(x_b, z_kb) − log q(z_kb | x_b) and the
    bound Σ_b log (1/K) Σ_k w_kb, scaled by the data plate's N / batch *after* the log-mean-exp (Pyro's
    RenyiELBO(alpha=0) scales the log-weights first, which is another bound under minibatches). Every
    sample site must lie in the data plate (dim −1). ``dreg=True`` gives the doubly reparameterised
    gradient of Tucker et al. (2018) for the guide: path gradients only, weighted by the squared
    normalised weights w̃²; the model's parameters keep the ordinary weights w̃. No host synchronisation.
    """

    def __init__(self, num_particles=2, max_plate_nesting=1, vectorize_particles=True, dreg=False, **kwargs):
        super().__init__(num_particles=num_particles, max_plate_nesting=max_plate_nesting,
                         vectorize_particles=True, **kwargs)
        self.dreg = dreg

    def differentiable_loss(self, model, guide, *args, **kwargs):
        (model_trace, guide_trace), = self._get_traces(model, guide, args, kwargs)
        log_p, scale = _per_example_log_prob(model_trace, self.num_particles)
        log_q, _ = _per_example_log_prob(guide_trace, self.num_particles, path_only=self.dreg)
        log_weights = log_p - log_q  # (K, batch)
        bound = torch.logsumexp(log_weights, 0) - math.log(self.num_particles)
        if not self.dreg:
            return -(scale * bound).sum()
        normalised = torch.softmax(log_weights.detach(), 0)
        if self.num_particles > 1:  # with one particle w̃ = 1: DReG is sticking the landing
            _weight_path_gradients(guide_trace, normalised)  # the guide's path gradient gets w̃ once more: w̃²
        surrogate = (normalised * log_weights).sum(0)
        return -(scale * (bound.detach() + surrogate - surrogate.detach())).sum()


def _per_example_log_prob(trace, num_particles: int, path_only: bool = False):
    """Σ over sites of the unscaled log-probabilities, shape (K, batch), and the data plate's scale.

    ``path_only`` keeps the value's path gradient and drops the parameters' (as sticking the landing)."""
    total, scale = 0.0, 1.0
    for site in trace.nodes.values():
        if site["type"] != "sample" or site_is_subsample(site):
            continue
        log_prob = site["unscaled_log_prob"]
        if path_only and site["fn"].has_rsample and not is_delta(site["fn"]):
            at_detached = site["fn"].log_prob(site["value"].detach())
            log_prob = log_prob - at_detached + at_detached.detach()
        if num_particles == 1 and log_prob.dim() == 1:  # one particle: Pyro adds no particle dimension
            log_prob = log_prob.unsqueeze(0)
        if log_prob.dim() < 2 or log_prob.shape[0] != num_particles:
            raise ZooError(f"--elbo iwae needs every sample site inside the data plate (dim -1) with the particles "
                           f"at dim -2; site {site['name']!r} has log-probability shape {tuple(log_prob.shape)}.")
        total = total + log_prob
        scale = site["scale"]
    return total, scale


def is_delta(fn) -> bool:
    """A point mass, possibly masked, expanded or made an event: an auto guide's site that unpacks a
    sampled latent to its support. Its log-density (−log|J| of that map) depends on the parameters only
    through the sample, so all of its gradient is path gradient: no score term to drop."""
    while not isinstance(fn, Delta) and hasattr(fn, "base_dist"):
        fn = fn.base_dist
    return isinstance(fn, Delta)


def _weight_path_gradients(guide_trace, normalised):
    for site in guide_trace.nodes.values():
        value = site.get("value")
        if site["type"] != "sample" or site_is_subsample(site) or is_delta(site["fn"]):
            continue  # a Delta site passes on the gradient of the site it unpacks, which is weighted already
        if torch.is_tensor(value) and value.requires_grad:
            event_dims = value.dim() - normalised.dim()
            weight = normalised.reshape(normalised.shape + (1,) * event_dims)
            value.register_hook(lambda gradient, weight=weight: gradient * weight)


DReGELBO = functools.partial(ImportanceWeightedELBO, dreg=True)
