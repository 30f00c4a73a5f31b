"""The shared scorer of models with a local latent per example (VAEs, latent-factor models).

Scores are per example and averaged over a test set, computed in chunks on the
device, never one trace over all the data at once (IWAE's evaluation, Burda et
al. 2016, sec. 5): for each example, k draws z ~ q(z | x) give log-weights
log p(x, z) − log q(z | x); their mean is the example's ELBO and their
log-mean-exp the importance-sampled estimate of log p(x), a lower bound that
tightens as k grows. The guide must be able to score new examples (amortised);
every latent site must lie in the model's data plate (its first plate dimension).
"""

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

import pyro
import torch

from ..engine import distributed
from .global_latents import Budget, timing


@dataclass(frozen=True)
class LocalBounds:
    """Per-example ELBO and importance-sampled log-likelihood (float64, on the CPU), and k."""

    elbo: torch.Tensor
    log_likelihood: torch.Tensor
    num_samples: int

    def summary(self, prefix: str = "test") -> Dict[str, float]:
        count = self.elbo.numel()
        error = lambda v: float(v.std() / math.sqrt(count)) if count > 1 else math.nan
        return {f"{prefix}_elbo": float(self.elbo.mean()), f"{prefix}_log_likelihood": float(self.log_likelihood.mean()),
                f"{prefix}_log_likelihood_se": error(self.log_likelihood), "is_samples": self.num_samples}


def per_example_log_weights(model: Callable, guide: Callable, args: Tuple, num_samples: int) -> torch.Tensor:
    """log p(x_i, z) − log q(z | x_i) for ``num_samples`` draws of every example: shape (num_samples, batch).

    The draws are a vectorised plate at dim −2 (the model's data plate is dim −1).
    """
    batch = int(args[0].shape[0])
    with torch.no_grad():
        with pyro.plate("_importance_samples", num_samples, dim=-2):
            guide_trace = pyro.poutine.trace(guide).get_trace(*args)
            model_trace = pyro.poutine.trace(pyro.poutine.replay(model, trace=guide_trace)).get_trace(*args)
        return _summed(model_trace, num_samples, batch) - _summed(guide_trace, num_samples, batch)


def _summed(trace, num_samples: int, batch: int) -> torch.Tensor:
    total = 0.0
    for site in trace.nodes.values():
        if site["type"] != "sample" or site["name"] == "_importance_samples" or pyro.poutine.util.site_is_subsample(site):
            continue
        log_prob = site["fn"].log_prob(site["value"])
        while log_prob.dim() < 2:
            log_prob = log_prob.unsqueeze(-1)
        total = total + torch.broadcast_to(log_prob, (num_samples, batch)).double()
    return total


def local_bounds(model: Callable, guide: Callable, args: Tuple, num_samples: int,
                 chunk_examples: int = 100, chunk_samples: int = 500) -> LocalBounds:
    """Per-example bounds over every example of ``args`` (leading dimension), in chunks of
    ``chunk_examples`` examples × ``chunk_samples`` draws, accumulating log-sum-exps.

    Data-parallel, the replicas share the chunks and gather the results, so every replica gets the
    bounds of every example (each drawn by one replica)."""
    num_examples = int(args[0].shape[0])
    replicas = distributed.world()
    starts = list(range(0, num_examples, chunk_examples))
    elbos, log_likelihoods = [], []
    for start in starts[replicas.rank::replicas.size]:
        chunk = tuple(a[start:start + chunk_examples] for a in args)
        total_weight, total_log = None, None
        for drawn in range(0, num_samples, chunk_samples):
            log_weights = per_example_log_weights(model, guide, chunk, min(chunk_samples, num_samples - drawn))
            chunk_sum = torch.logsumexp(log_weights, 0)
            total_log = chunk_sum if total_log is None else torch.logaddexp(total_log, chunk_sum)
            total_weight = log_weights.sum(0) if total_weight is None else total_weight + log_weights.sum(0)
        elbos.append((total_weight / num_samples).cpu())
        log_likelihoods.append((total_log - math.log(num_samples)).cpu())
    if replicas.parallel:  # chunk i was drawn by rank i % size: put them back in order
        shares = replicas.gather_objects((elbos, log_likelihoods))
        elbos = [shares[i % replicas.size][0][i // replicas.size] for i in range(len(starts))]
        log_likelihoods = [shares[i % replicas.size][1][i // replicas.size] for i in range(len(starts))]
    return LocalBounds(torch.cat(elbos), torch.cat(log_likelihoods), num_samples)


@dataclass(frozen=True)
class LocalLatentScoring:
    """How a family with local latents is scored: test-set bounds per example (see the module docstring).

    ``evaluate``, ``baselines`` and ``figures`` as for
    :class:`~pyro_vi_zoo.scoring.global_latents.GlobalLatentScoring`. The test
    set is scored when there is one, else the training set.
    """

    evaluate: Optional[Callable] = None
    reference: Optional[Callable] = None
    baselines: Mapping[str, Callable] = field(default_factory=dict)
    figures: Optional[Callable] = None
    chunk_examples: int = 100

    def score(self, fit, dataset, reference, sites: Sequence[str], budget: Budget,
              draws_out: Optional[Dict] = None) -> Dict[str, Any]:
        row = {}
        if fit.has_density:
            args = dataset.test if dataset.test is not None else dataset.train
            with fit.activate():
                bounds = local_bounds(fit.score_model, fit.guide, args, budget.num_is_samples, self.chunk_examples)
            row.update(bounds.summary("test" if dataset.test is not None else "train"))
        if self.evaluate is not None:
            row.update(self.evaluate(fit, dataset, budget.num_eval_samples))
        row.update(timing(fit))
        return row
