"""The shared scorer of models whose latents are global (regressions, mixtures, networks' weights).

Per fitted guide (DESIGN.md, "Posterior quality"): the ELBO and PSIS k̂ (Yao et
al. 2018) from one set of importance weights on the training data, with
non-finite weights counted; distances to a reference posterior (exact KL when
the reference is a known Gaussian; marginal Wasserstein, mean error in sds, sd
ratio and correlation error against reference draws); the family's own held-out
scores; the final loss, wall time and steps per second.
"""

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Mapping, Optional, Sequence

from . import metrics
from .diagnostics import guide_gaussian, importance_log_weights
from .references import Reference


@dataclass(frozen=True)
class Budget:
    """How many draws scoring may spend: posterior draws for predictive scores and reference
    distances, importance samples for the ELBO and k̂, and per-example samples for local bounds."""

    num_eval_samples: int = 1000
    num_elbo_particles: int = 1000
    num_is_samples: int = 5000


@dataclass(frozen=True)
class GlobalLatentScoring:
    """How a family with global latents is scored and reported.

    Attributes:
        evaluate: ``evaluate(fit, dataset, num_samples) -> dict`` of held-out scores.
        reference: ``reference(dataset, setup, fast=..., progress=...) -> Reference or None``.
        baselines: non-Bayesian rows, ``name -> baseline(dataset, setup, settings) -> Baseline``.
        figures: ``figures(comparison) -> {name: Figure}``, beside the shared ELBO traces and marginals.
    """

    evaluate: Optional[Callable] = None
    reference: Optional[Callable] = None
    baselines: Mapping[str, Callable] = field(default_factory=dict)
    figures: Optional[Callable] = None

    def score(self, fit, dataset, reference: Optional[Reference], sites: Sequence[str], budget: Budget,
              draws_out: Optional[Dict] = None) -> Dict[str, Any]:
        row = {}
        if fit.has_density:
            row.update(importance_scores(fit, budget.num_elbo_particles))
        if sites:
            draws = fit.sample_posterior(budget.num_eval_samples, sites)
            if draws_out is not None:
                draws_out[fit.guide_name] = draws
            if reference is not None:
                row.update(metrics.reference_distances(metrics.flatten_samples(draws, sites)[0],
                                                       metrics.flatten_samples(reference.samples, sites)[0]))
                if reference.is_exact:
                    row.update(kl_to_exact(fit, reference, row.get("elbo")))
        if self.evaluate is not None:
            row.update(self.evaluate(fit, dataset, budget.num_eval_samples))
        row.update(timing(fit))
        return row


@dataclass(frozen=True)
class Baseline:
    """A non-Bayesian row: its scores, and the fitted object figures may draw (e.g. the MLE network)."""

    row: Dict[str, Any]
    fitted: Any = None


def importance_scores(fit, num_particles: int) -> Dict[str, float]:
    """``elbo``, ``pareto_k`` and ``nonfinite_weights`` from ``num_particles`` importance weights."""
    log_weights = importance_log_weights(fit, num_particles)
    finite = log_weights[~(log_weights.isnan() | (log_weights == math.inf))]
    return {"elbo": metrics.elbo_from_log_weights(finite) if finite.numel() else math.nan,
            "pareto_k": metrics.pareto_khat(log_weights),
            "nonfinite_weights": metrics.count_nonfinite(log_weights)}


def timing(fit) -> Dict[str, float]:
    return {"final_loss": fit.final_loss, "wall_time_s": fit.wall_time, "steps_per_s": fit.steps_per_second}


def kl_to_exact(fit, reference: Reference, elbo: Optional[float]) -> Dict[str, Any]:
    """KL(q‖p) to an exact Gaussian posterior: closed form for Gaussian guides, else log p(x) − ELBO (Monte Carlo)."""
    gaussian = guide_gaussian(fit, reference.sites)
    if gaussian is not None:
        return {"kl_to_exact": metrics.gaussian_kl(*gaussian, reference.loc, reference.cov), "kl_method": "closed_form"}
    if elbo is not None and reference.log_evidence is not None:
        return {"kl_to_exact": reference.log_evidence - elbo, "kl_method": "monte_carlo"}
    return {"kl_to_exact": math.nan, "kl_method": "undefined (point estimate)"}
