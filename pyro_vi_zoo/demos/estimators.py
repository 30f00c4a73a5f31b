"""Gradient estimators of the ELBO side by side: their variance at the same parameters, and what each does to a fit.

Used by ``notebooks/estimators.ipynb`` and ``benchmarks/estimators.py``. The estimators are the engine's ELBOs
by name: ``score`` (REINFORCE), ``trace`` (reparameterised), ``meanfield`` (analytic KL where it exists),
``stl`` (sticking the landing), and for local latents ``iwae`` and ``iwae_dreg``. Variance is measured at a
fitted guide (near the optimum, where SVI spends its time and where STL's variance vanishes), as the total
variance of the per-draw gradient (the trace of its covariance) and the median signal-to-noise ratio
|mean| / sd over the guide's parameters.
"""

from typing import Dict, List, Sequence

import pandas as pd
import pyro
import torch

from ..engine import ELBOS, FitResult


def guide_parameters(result: FitResult) -> List[torch.Tensor]:
    """The fitted guide's trainable tensors (module parameters, or the param store's unconstrained values)."""
    with result.activate():
        if isinstance(result.guide, torch.nn.Module) and list(result.guide.parameters()):
            return list(result.guide.parameters())
        store = pyro.get_param_store()
        return [store[name].unconstrained() for name in store.keys()]


def gradient_draws(result: FitResult, elbo: str, num_draws: int = 200, num_particles: int = 1) -> torch.Tensor:
    """``num_draws`` independent gradients of the negative ELBO at the fitted parameters: (draws, parameters)."""
    estimator = ELBOS[elbo](num_particles=num_particles, vectorize_particles=num_particles > 1,
                            max_plate_nesting=result.max_plate_nesting)
    rows = []
    with result.activate():
        parameters = guide_parameters(result)
        for _ in range(num_draws):
            loss = estimator.differentiable_loss(result.model, result.guide, *result.args)
            gradients = torch.autograd.grad(loss, parameters, allow_unused=True)
            rows.append(torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1)
                                   for g, p in zip(gradients, parameters)]).detach())
    return torch.stack(rows).double().cpu()


def gradient_summary(draws: torch.Tensor) -> Dict[str, float]:
    """Total variance (trace of the covariance) and median signal-to-noise ratio of gradient draws."""
    mean, sd = draws.mean(0), draws.std(0)
    informative = sd > 0
    snr = (mean.abs()[informative] / sd[informative]).median() if informative.any() else torch.tensor(float("inf"))
    return {"gradient_variance": float(draws.var(0).sum()), "gradient_snr": float(snr)}


def variance_table(result: FitResult, estimators: Sequence[str], num_draws: int = 200, seed: int = 0) -> pd.DataFrame:
    """One row per estimator: gradient variance and SNR at ``result``'s fitted parameters, the same draws' seed."""
    rows = []
    for name in estimators:
        pyro.set_rng_seed(seed)
        rows.append({"estimator": name, **gradient_summary(gradient_draws(result, name, num_draws))})
    return pd.DataFrame(rows)
