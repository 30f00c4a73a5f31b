"""Trace_ELBO, TraceMeanField_ELBO and TraceEnum_ELBO without host synchronisation, for the zoo's step.

Pyro's ELBOs read every loss back to the host (``torch_item``, ``warn_if_nan``) on every step, which a
captured CUDA graph cannot hold and which stalls an eager GPU step. These subclasses compute the same
numbers (the same traces, log-probability sums, KL terms, scales, score-function surrogates and
enumerated sums) and keep them on the device; the loop checks finiteness itself every ``log_every`` steps.
"""

import torch
from pyro.distributions.kl import kl_divergence
from pyro.distributions.util import is_identically_zero, scale_and_mask
from pyro.infer import Trace_ELBO, TraceEnum_ELBO, TraceMeanField_ELBO
from pyro.infer.trace_elbo import _compute_log_r
from pyro.infer.traceenum_elbo import _compute_dice_elbo, _compute_model_factors
from pyro.ops.contract import contract_to_tensor
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
        loss = guide_trace.log_prob_sum() - model_trace.log_prob_sum()
        if fully_reparameterised(guide_trace):
            return loss
        surrogate = -surrogate_elbo(model_trace, guide_trace)
        return loss.detach() + (surrogate - surrogate.detach())


def surrogate_elbo(model_trace, guide_trace):
    """Trace_ELBO's surrogate for guides with sites that are not reparameterised: its gradient adds, per such
    site, the score function times the log-ratio of the sites downstream of it within its plates."""
    surrogate = model_trace.log_prob_sum()
    log_r = None
    for site in guide_trace.nodes.values():
        if site["type"] != "sample":
            continue
        _, score_function, entropy = site["score_parts"]
        if not is_identically_zero(entropy):
            surrogate = surrogate - entropy.sum()
        if not is_identically_zero(score_function):
            log_r = log_ratio(model_trace, guide_trace) if log_r is None else log_r
            surrogate = surrogate + (log_r.sum_to(site["cond_indep_stack"]) * score_function).sum()
    return surrogate


def log_ratio(model_trace, guide_trace):
    """log p − log q per plate frame, detached: the reward the score-function terms weigh.

    Pyro's ``_compute_log_r`` walks the model's sites only, so a guide's auxiliary site (one the model
    lacks: AutoNormal's ``*_unconstrained``, the AutoContinuous latent) drops out of the reward, and
    when such a site is not reparameterised its −log q gets no gradient: a bias. Here it is counted.
    """
    log_r = _compute_log_r(model_trace, guide_trace)
    for name, site in guide_trace.nodes.items():
        if site["type"] == "sample" and name not in model_trace.nodes and not site_is_subsample(site):
            log_r.add((site["cond_indep_stack"], -site["log_prob"].detach()))
    return log_r


class SyncFreeMeanFieldELBO(TraceMeanField_ELBO):
    """Pyro's TraceMeanField_ELBO (analytic KL where registered), with no host synchronisation."""

    def differentiable_loss(self, model, guide, *args, **kwargs):
        loss = 0.0
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            loss = loss - negative_free_energy(model_trace, guide_trace) / self.num_particles
        return loss


class SyncFreeTraceEnumELBO(TraceEnum_ELBO):
    """Pyro's TraceEnum_ELBO (discrete sites summed out in the model), with no host synchronisation.

    With a reparameterised guide that enumerates nothing (discrete sites enumerated in the model only),
    each particle's ELBO is log p(x, θ) with the enumerated sites summed out, minus log q(θ): one
    sum-product contraction. Pyro computes the same number through DiCE, which checks on the host that
    every enumerated probability is positive. Other guides take Pyro's DiCE path, which a CUDA graph
    cannot record. Enumerated sites must share one subsampling scale given as a number (Pyro compares
    them on the host); a plate subsampled to a fixed size has one.
    """

    #: why a step with this ELBO cannot be recorded as a CUDA graph (set by a call that took DiCE's path)
    reads_back = None

    def differentiable_loss(self, model, guide, *args, **kwargs):
        elbo = 0.0
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            if fully_reparameterised(guide_trace) and not enumerates(guide_trace):
                particle = model_enumerated_elbo(model_trace, guide_trace)
            else:
                self.reads_back = ("the guide enumerates or samples a discrete site, and TraceEnum_ELBO's DiCE "
                                   "estimator then checks its probabilities on the host")
                particle = _compute_dice_elbo(model_trace, guide_trace)
            if not is_identically_zero(particle):
                elbo = elbo + particle
        if not (torch.is_tensor(elbo) and elbo.requires_grad):
            raise ValueError(f"the enumerated ELBO cannot be differentiated: {elbo}")
        return -elbo / self.num_particles


def enumerates(guide_trace) -> bool:
    return any(site["type"] == "sample" and ("_enumerate_dim" in site["infer"] or "_enum_total" in site["infer"])
               for site in guide_trace.nodes.values())


def model_enumerated_elbo(model_trace, guide_trace):
    """One particle's ELBO when only the model enumerates: the model's costs outside the enumerated sites,
    plus the log-sum over enumerated values of its factors that depend on them (masked inside, scaled
    outside), minus the guide's log-density; the traces' tensors are packed (TraceEnum_ELBO's traces)."""
    costs, enumerated_factors, _, sum_dims, scale = _compute_model_factors(model_trace, guide_trace)
    elbo = sum(term.sum() for terms in costs.values() for term in terms)
    if enumerated_factors:
        elbo = elbo + scale * contract_to_tensor(enumerated_factors, sum_dims)
    return elbo - guide_trace.log_prob_sum()


#: the name Pyro gives the plate of vectorised particles
PARTICLES = "num_particles_vectorized"


def enumerated_log_weights(model_trace, guide_trace) -> torch.Tensor:
    """Each vectorised particle's log p(x, θ) − log q(θ) with the model's enumerated sites summed out: the
    importance weights of a model that enumerates, whose sum over particles is :func:`model_enumerated_elbo`."""
    costs, enumerated_factors, _, sum_dims, scale = _compute_model_factors(model_trace, guide_trace)
    symbol = guide_trace.plate_to_symbol[PARTICLES]  # an ordinal is the set of its plates' symbols
    total = sum(_per_particle(term, symbol) for terms in costs.values() for term in terms)
    if enumerated_factors:
        contracted = contract_to_tensor(enumerated_factors, sum_dims, target_ordinal=frozenset({symbol}))
        total = total + scale * _per_particle(contracted, symbol)
    for site in guide_trace.nodes.values():
        if site["type"] == "sample" and not site_is_subsample(site):
            total = total - _per_particle(site["packed"]["log_prob"], symbol)
    return total


def _per_particle(packed: torch.Tensor, symbol: str) -> torch.Tensor:
    """A packed tensor summed over every dimension but the particles' (all of them if it has none)."""
    dims = getattr(packed, "_pyro_dims", "")
    if symbol not in dims:
        return packed.sum()
    others = [dim for dim in range(packed.dim()) if dim != dims.index(symbol)]
    return packed.sum(others) if others else packed  # (sum over [] would sum over everything)


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
