"""Run a fitted guide to produce what :mod:`pyro_vi_zoo.metrics` scores: importance weights and Gaussians.

Generic over models: everything here goes through Pyro traces of the fitted
model and guide, never through model-specific code.
"""

from typing import Optional, Sequence, Tuple

import pyro
import torch
from pyro.infer import TraceEnum_ELBO
from pyro.infer.autoguide import AutoContinuous, AutoNormal
from pyro.infer.importance import vectorized_importance_weights

from ..engine.elbos import enumerated_log_weights
from ..engine.result import FitResult, is_enumerated, model_trace


def importance_log_weights(result: FitResult, num_particles: int = 1000, chunk_size: int = 250) -> torch.Tensor:
    """log p(x, z) − log q(z) for ``num_particles`` draws z ~ q, on the training data, in vectorised chunks;
    a model's enumerated sites are summed out of p, as the fit's ELBO sums them."""
    chunks = []
    remaining = num_particles
    with result.activate(), torch.no_grad():
        enumerates = any(is_enumerated(site) for site in model_trace(result.score_model, result.args).nodes.values())
        while remaining > 0:
            size = min(chunk_size, remaining)
            if enumerates:
                elbo = TraceEnum_ELBO(num_particles=size, vectorize_particles=True,
                                      max_plate_nesting=result.max_plate_nesting)
                with pyro.validation_enabled(False):
                    (model, guide), = elbo._get_traces(result.score_model, result.guide, result.args, {})
                log_weights = enumerated_log_weights(model, guide)
            else:
                log_weights, _, _ = vectorized_importance_weights(
                    result.score_model, result.guide, *result.args, num_samples=size,
                    max_plate_nesting=result.max_plate_nesting, normalized=False,
                )
            chunks.append(log_weights.reshape(-1).detach())
            remaining -= size
    return torch.cat(chunks)


def guide_gaussian(result: FitResult, sites: Sequence[str]) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
    """The guide's Gaussian (mean, covariance) over ``sites`` flattened in that order, or ``None``.

    Exists for AutoContinuous guides whose joint is a (low-rank, diagonal or full)
    multivariate Normal over real-valued sites, and for guides that sample each
    site from a Normal (mean-field: a diagonal covariance). Flows, point masses
    and guides over constrained sites give ``None``.
    """
    with result.activate(), torch.no_grad():
        if isinstance(result.guide, AutoContinuous):
            return _auto_continuous_gaussian(result, sites)
        if isinstance(result.guide, AutoNormal):
            return _auto_normal_gaussian(result.guide, sites)
        return _sitewise_gaussian(result, sites)


def _auto_normal_gaussian(guide, sites):
    locs, variances = [], []
    for name in sites:
        site = guide.prototype_trace.nodes.get(name)
        if site is None or not _is_real(site["fn"]):
            return None
        locs.append(getattr(guide.locs, name).reshape(-1))
        variances.append(getattr(guide.scales, name).reshape(-1) ** 2)
    return torch.cat(locs).double().cpu(), torch.diag(torch.cat(variances)).double().cpu()


def _auto_continuous_gaussian(result, sites):
    guide = result.guide
    layout = []
    for name, site in guide.prototype_trace.iter_stochastic_nodes():
        if not _is_real(site["fn"]):
            return None
        layout.append((name, site["value"].numel()))
    moments = _moments(guide.get_posterior())
    if moments is None:
        return None
    return _reorder(*moments, layout, sites)


def _sitewise_gaussian(result, sites):
    trace = pyro.poutine.trace(result.guide).get_trace(*result.args)
    locs, variances = [], []
    for name in sites:
        if name not in trace.nodes:
            return None
        fn = trace.nodes[name]["fn"]
        while isinstance(fn, pyro.distributions.Independent):
            fn = fn.base_dist
        if not isinstance(fn, pyro.distributions.Normal):
            return None
        shape = trace.nodes[name]["value"].shape
        locs.append(fn.loc.expand(shape).reshape(-1))
        variances.append(fn.scale.expand(shape).reshape(-1) ** 2)
    return torch.cat(locs).double().cpu(), torch.diag(torch.cat(variances)).double().cpu()


def _is_real(fn) -> bool:
    support = fn.support
    while hasattr(support, "base_constraint"):
        support = support.base_constraint
    return support is torch.distributions.constraints.real


def _moments(posterior):
    if isinstance(posterior, (pyro.distributions.MultivariateNormal, pyro.distributions.LowRankMultivariateNormal)):
        return posterior.loc.double().cpu(), posterior.covariance_matrix.double().cpu()
    if isinstance(posterior, pyro.distributions.Independent) and isinstance(posterior.base_dist, pyro.distributions.Normal):
        return posterior.base_dist.loc.double().cpu(), torch.diag(posterior.base_dist.scale.double().cpu() ** 2)
    return None


def _reorder(loc, cov, layout, sites):
    offsets, start = {}, 0
    for name, size in layout:
        offsets[name] = torch.arange(start, start + size, device=loc.device)
        start += size
    if any(name not in offsets for name in sites):
        return None
    index = torch.cat([offsets[name] for name in sites])
    return loc[index], cov[index][:, index]
