"""Held-out predictive scores of a fitted guide, through the model's own likelihood.

A model trace at the test arguments, with a batch of guide draws, gives each
observed site's likelihood under every draw at once; nothing here knows which
model it is.
"""

import math
from typing import Dict, Tuple

import torch

from . import metrics


def observed_likelihoods(result, args, num_samples: int) -> Dict[str, Tuple[object, torch.Tensor]]:
    """Each observed site's likelihood ``fn`` (batched over ``num_samples`` draws) and its observed value."""
    trace = result.vectorized_trace(*args, num_samples=num_samples)
    return {name: (site["fn"], site["value"]) for name, site in trace.nodes.items()
            if site["type"] == "sample" and site["is_observed"]}


def heldout_scores(result, args, num_samples: int = 1000, scale: float = 1.0) -> Dict[str, float]:
    """``test_lpd``, and for one real-valued observed site ``rmse``, ``coverage_90`` and ``width_90``.

    ``test_lpd`` is the mean over test examples (the leading dimension of ``args``)
    of log (1/S) Σ_s p(y_i | θ_s), summed over observed sites; ``scale`` is the
    target's scale when the model saw standardised targets (scores come back in
    original units). Draws run without gradients; the interval is the central 90%
    of predictive draws.
    """
    sites = observed_likelihoods(result, args, num_samples)
    if not sites:
        return {}
    num_examples = int(args[0].shape[0])
    total = 0.0
    with torch.no_grad():
        for fn, value in sites.values():
            log_likelihood = fn.log_prob(value).reshape(num_samples, -1).double()
            total += float((torch.logsumexp(log_likelihood, 0) - math.log(num_samples)).sum())
    row = {"test_lpd": total / num_examples - math.log(scale)}
    if len(sites) == 1:
        fn, value = next(iter(sites.values()))
        if value.is_floating_point():
            row.update(_point_and_interval(fn, value, scale))
    return row


def _point_and_interval(fn, value, scale: float) -> Dict[str, float]:
    with torch.no_grad():
        draws = fn.sample()
        try:
            mean = fn.mean.expand_as(draws).mean(0)
        except NotImplementedError:
            mean = draws.mean(0)
    coverage, width = metrics.interval_coverage(draws.reshape(draws.shape[0], -1), value.reshape(-1), 0.9)
    return {"rmse": metrics.rmse(mean.reshape(-1), value.reshape(-1)) * scale, "coverage_90": coverage,
            "width_90": width * scale}
