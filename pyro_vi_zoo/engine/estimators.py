"""Gradient estimators of the ELBO that Pyro lacks: sticking the landing, and the plain score function.

Both keep the ELBO's value and change only its gradient:

* ``STLTraceELBO`` (Roeder, Wu & Duvenaud 2017, "Sticking the landing"): the total derivative of
  log q(z(ε, φ); φ) has a path term and a score term, E_q[∇_φ log q(z; φ)] = 0. Dropping the score term
  keeps the estimator unbiased and makes its variance vanish as q reaches the posterior. Per guide site the
  surrogate is log q(z; φ) − log q(z̄; φ) + log q(z̄; φ)|detached, z̄ = z without gradient: the same value,
  the path gradient only. Works for any reparameterised guide (hand-written, AutoNormal, the
  AutoContinuous family, flows); a site without ``rsample`` is refused.
* ``ScoreFunctionELBO`` (Williams 1992; Ranganath et al. 2014): every guide site is treated as
  non-reparameterised, so Pyro's own Trace_ELBO builds the REINFORCE surrogate (with its
  Rao-Blackwellisation over plates) — the high-variance baseline of the reparameterisation trick.
"""

import torch
from pyro.distributions.torch_distribution import TorchDistribution
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
            if is_identically_zero(entropy_term):
                continue
            at_detached = site["fn"].log_prob(site["value"].detach())
            scale, mask = site["scale"], site["mask"]
            if mask is not None:
                at_detached = at_detached.masked_fill(~mask, 0.0) if isinstance(mask, torch.Tensor) else at_detached
            at_detached = (at_detached * scale).sum()
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


class ScoreFunctionELBO(Trace_ELBO):
    """Trace_ELBO with every guide site's gradient estimated by the score function (REINFORCE)."""

    def _get_trace(self, model, guide, args, kwargs):
        return super()._get_trace(model, _ScoreFunctionGuide()(guide), args, kwargs)
