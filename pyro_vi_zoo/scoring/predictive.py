"""Held-out predictive scores of a fitted guide, through the model's own likelihood.

A model trace at the test arguments, with a batch of guide draws, gives each
observed site's likelihood under every draw at once; nothing here knows which
model it is.
"""

import math
from typing import Dict, Tuple

import torch
from pyro.distributions.torch_distribution import MaskedDistribution

from ..engine.result import is_observation
from . import metrics


def observed_likelihoods(result, args, num_samples: int) -> Dict[str, Tuple[object, torch.Tensor, object]]:
    """Each observed site's likelihood ``fn`` (batched over ``num_samples`` draws), its observed value, and
    its mask (``poutine.mask`` or ``.mask()``; ``None`` where every entry counts)."""
    trace = result.vectorized_trace(*args, num_samples=num_samples)
    return {name: (site["fn"], site["value"], _mask_of(site)) for name, site in trace.nodes.items()
            if is_observation(site)}


def _mask_of(site):
    masks = [] if site["mask"] is None else [site["mask"]]
    fn = site["fn"]
    while hasattr(fn, "base_dist"):
        if isinstance(fn, MaskedDistribution):
            masks.append(fn._mask)
        fn = fn.base_dist
    if not masks:
        return None
    shape = site["fn"].batch_shape
    kept = torch.ones(shape, dtype=torch.bool, device=site["value"].device)
    for mask in masks:
        kept = kept & torch.as_tensor(mask, device=kept.device).expand(shape)
    return kept


def heldout_scores(result, args, num_samples: int = 1000, scale: float = 1.0) -> Dict[str, float]:
    """``test_lpd``, and for one real-valued observed site ``rmse``, ``coverage_90`` and ``width_90``.

    ``test_lpd`` is the mean over test examples (the leading dimension of ``args``)
    of log (1/S) Σ_s p(y_i | θ_s), where y_i is everything observed of example i
    (every observed site, every entry of its row, jointly: a row's columns count
    the same whether the model declares them in a plate or as an event); ``scale``
    is the target's scale when the model saw standardised targets (scores come back
    in original units). Entries a mask leaves out are not scored, and examples with
    no scored entry are not counted. A site not laid out by rows is scored as one
    more example. Draws run without gradients; the interval is the central 90% of
    predictive draws.
    """
    sites = observed_likelihoods(result, args, num_samples)
    if not sites:
        return {}
    num_rows = int(args[0].shape[0])
    counted = torch.zeros(num_rows, dtype=torch.bool, device="cpu")
    by_row = torch.zeros(num_samples, num_rows, dtype=torch.float64, device="cpu")  # log p(y_i | θ_s), all of row i
    total = 0.0
    with torch.no_grad():
        for fn, value, kept in sites.values():
            log_likelihood = fn.log_prob(value).reshape(num_samples, -1).double().cpu()
            keep = _per_entry(kept, num_samples, log_likelihood[0]).cpu()
            log_likelihood = log_likelihood.masked_fill(~keep, 0.0)
            if log_likelihood.shape[1] % num_rows == 0:
                by_row += log_likelihood.reshape(num_samples, num_rows, -1).sum(-1)
                counted |= keep.reshape(num_rows, -1).any(-1)
            else:  # a site not laid out by rows: one more example
                total += float(torch.logsumexp(log_likelihood.sum(-1), 0)) - math.log(num_samples)
                counted[:] = True
    total += float((torch.logsumexp(by_row, 0) - math.log(num_samples))[counted].sum())
    row = {"test_lpd": total / max(int(counted.sum()), 1) - math.log(scale)}
    if len(sites) == 1:
        fn, value, kept = next(iter(sites.values()))
        if value.is_floating_point():
            row.update(_point_and_interval(fn, value, scale, kept))
    return row


def _per_entry(kept, num_samples: int, log_density: torch.Tensor) -> torch.Tensor:
    """Which entries of a site's ``log_density`` (one per entry, over the draws) are scored: all without a mask."""
    if kept is None:
        return torch.ones(log_density.shape, dtype=torch.bool, device=log_density.device)
    return kept.reshape(num_samples, -1)[0].to(log_density.device)


def _point_and_interval(fn, value, scale: float, kept=None) -> Dict[str, float]:
    with torch.no_grad():
        draws = fn.sample()
        try:
            mean = fn.mean.expand_as(draws).mean(0)
        except NotImplementedError:
            mean = draws.mean(0)
    draws, mean, value = draws.reshape(draws.shape[0], -1), mean.reshape(-1), value.reshape(-1)
    if kept is not None:  # the mask covers the batch; an entry's event values share its verdict
        keep = kept[0].reshape(kept[0].shape + (1,) * fn.event_dim).expand(fn.shape()[1:])
        keep = keep.reshape(-1).to(value.device)
        draws, mean, value = draws[:, keep], mean[keep], value[keep]
    coverage, width = metrics.interval_coverage(draws, value, 0.9)
    return {"rmse": metrics.rmse(mean, value) * scale, "coverage_90": coverage, "width_90": width * scale}
