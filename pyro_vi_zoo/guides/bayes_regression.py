"""The hand-written mean-field guide of :func:`pyro_vi_zoo.models.bayes_regression`.

A Normal per weight and for the bias, independent, and a LogNormal for the
noise scale when it is learned (Blei et al. 2017, §2.3). For a Gaussian posterior
its optimum has the exact means and scales 1/sqrt(diag(precision)): mean-field
under-estimates the marginal spread when features are correlated.
"""

import pyro
import pyro.distributions as dist
import torch
from torch.distributions import constraints

#: the guide's parameters are named ``bayes_regression.<name>``, apart from any other model's in one param store
PREFIX = "bayes_regression"


def bayes_regression_guide(
    features: torch.Tensor,
    y: torch.Tensor = None,
    *,
    prior_scale: float = 10.0,
    noise_scale: float = None,
    noise_prior_scale: float = 1.0,
    subsample_size: int = None,
    subsample: torch.Tensor = None,
):
    """Mean-field guide; same signature and latent site names as the model."""
    num_features = features.shape[-1]
    weight_loc = pyro.param(f"{PREFIX}.weight_loc", lambda: features.new_zeros(num_features))
    weight_scale = pyro.param(
        f"{PREFIX}.weight_scale", lambda: features.new_full((num_features,), 0.01), constraint=constraints.positive
    )
    pyro.sample("weight", dist.Normal(weight_loc, weight_scale).to_event(1))
    bias_loc = pyro.param(f"{PREFIX}.bias_loc", lambda: features.new_zeros(()))
    bias_scale = pyro.param(f"{PREFIX}.bias_scale", lambda: features.new_tensor(0.01), constraint=constraints.positive)
    pyro.sample("bias", dist.Normal(bias_loc, bias_scale))
    if noise_scale is None:
        sigma_loc = pyro.param(f"{PREFIX}.sigma_loc", lambda: features.new_zeros(()))
        sigma_scale = pyro.param(f"{PREFIX}.sigma_scale", lambda: features.new_tensor(0.01),
                                 constraint=constraints.positive)
        pyro.sample("sigma", dist.LogNormal(sigma_loc, sigma_scale))
