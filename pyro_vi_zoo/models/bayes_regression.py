"""Bayesian linear regression on given features (Bishop 2006, §3.3).

    weight ~ Normal(0, prior_scale) per feature,  bias ~ Normal(0, prior_scale)
    sigma  ~ HalfNormal(noise_prior_scale)        (or fixed: ``noise_scale``)
    y_i    ~ Normal(features_i · weight + bias, sigma)

With ``noise_scale`` fixed the posterior of (weight, bias) is Gaussian in closed
form (:func:`pyro_vi_zoo.scoring.references.exact_linear_regression`), which makes this
model the zoo's yardstick for guides.
"""

import pyro
import pyro.distributions as dist
import torch

from .distributions import HalfNormal, constant
from .plates import minibatch_plate


def bayes_regression(
    features: torch.Tensor,
    y: torch.Tensor = None,
    *,
    prior_scale: float = 10.0,
    noise_scale: float = None,
    noise_prior_scale: float = 1.0,
    subsample_size: int = None,
    subsample: torch.Tensor = None,
):
    """Pyro model of Bayesian linear regression.

    Args:
        features: (n, d) design matrix (standardised features work best).
        y: (n,) targets, or ``None`` to sample predictions.
        prior_scale: standard deviation of the Normal prior on weights and bias.
        noise_scale: known noise standard deviation; ``None`` puts a HalfNormal
            prior of scale ``noise_prior_scale`` on it (site ``"sigma"``).
        subsample_size: minibatch size for SVI (``None`` uses all rows).
        subsample: the minibatch's row indices, chosen outside (a data-parallel replica's share of a
            shuffled global batch); replaces ``subsample_size``. The likelihood is scaled by n / its length.

    Returns:
        The mean of y for the rows in the (sub)sample.
    """
    num_points, num_features = features.shape
    prior_scale = constant(features, prior_scale)  # made on the device: no copy from the host per step
    weight = pyro.sample(
        "weight", dist.Normal(features.new_zeros(num_features), prior_scale).to_event(1)
    )
    bias = pyro.sample("bias", dist.Normal(features.new_zeros(()), prior_scale))
    if noise_scale is None:
        sigma = pyro.sample("sigma", HalfNormal(constant(features, noise_prior_scale)))
    else:
        sigma = constant(features, noise_scale)
    with minibatch_plate(num_points, subsample_size, subsample, features.device) as index:
        if len(index) < num_points:
            features, y = features[index], None if y is None else y[index]
        # vectorised draws arrive as (..., 1, d), the 1 being this plate's slot: drop it, then (..., d) @ (d, n)
        coefficients = weight if weight.dim() == 1 else weight.squeeze(-2)
        mean = coefficients @ features.T + bias
        pyro.sample("y", dist.Normal(mean, sigma), obs=y)
    return mean
