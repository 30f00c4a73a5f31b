"""Trace_ELBO and TraceMeanField_ELBO without host synchronisation, for the zoo's step.

Pyro's ELBOs read every loss back to the host (``torch_item``, ``warn_if_nan``) on every step, which a
captured CUDA graph cannot hold and which stalls an eager GPU step. These subclasses compute the same
numbers (the same traces, log-probability sums, KL terms and scales) and keep them on the device; the
loop checks finiteness itself every ``log_every`` steps. A guide with a site that is not
reparameterised takes Pyro's own estimator (its score-function surrogate needs more than a sum).
"""

import torch
from pyro.distributions.kl import kl_divergence
from pyro.distributions.util import scale_and_mask
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from pyro.poutine.util import site_is_subsample


def fully_reparameterised(guide_trace) -> bool:
    return all(site["fn"].has_rsample for site in guide_trace.nodes.values()
               if site["type"] == "sample" and not site_is_subsample(site))


class SyncFreeTraceELBO(Trace_ELBO):
    """Pyro's Trace_ELBO estimator, returned as a device tensor with no host synchronisation."""

    def differentiable_loss(self, model, guide, *args, **kwargs):
        loss = 0.0
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            loss = loss + self._particle_loss(model_trace, guide_trace) / self.num_particles
        return loss

    def _particle_loss(self, model_trace, guide_trace):
        if fully_reparameterised(guide_trace):
            return guide_trace.log_prob_sum() - model_trace.log_prob_sum()
        loss, surrogate_loss = super()._differentiable_loss_particle(model_trace, guide_trace)
        return loss + (surrogate_loss - surrogate_loss.detach())


class SyncFreeMeanFieldELBO(TraceMeanField_ELBO):
    """Pyro's TraceMeanField_ELBO (analytic KL where registered), with no host synchronisation."""

    def differentiable_loss(self, model, guide, *args, **kwargs):
        loss = 0.0
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            loss = loss - negative_free_energy(model_trace, guide_trace) / self.num_particles
        return loss


def negative_free_energy(model_trace, guide_trace):
    """The mean-field ELBO of one particle: observed log-likelihood minus KL(q‖p) per latent site
    (closed form where torch registers it, a one-draw estimate otherwise), minus auxiliary guide entropy."""
    elbo = 0.0
    for name, site in model_trace.nodes.items():
        if site["type"] != "sample":
            continue
        if site["is_observed"]:
            elbo = elbo + site["log_prob_sum"]
            continue
        guide_site = guide_trace.nodes[name]
        try:
            kl = kl_divergence(guide_site["fn"], site["fn"])
        except NotImplementedError:
            elbo = elbo + site["log_prob_sum"] - guide_site["score_parts"].entropy_term.sum()
            continue
        kl = scale_and_mask(kl, scale=guide_site["scale"], mask=guide_site["mask"])
        elbo = elbo - (kl.sum() if torch.is_tensor(kl) else kl * guide_site["fn"].batch_shape.numel())
    for name, guide_site in guide_trace.nodes.items():
        if guide_site["type"] == "sample" and name not in model_trace.nodes:
            elbo = elbo - guide_site["score_parts"].entropy_term.sum()
    return elbo
