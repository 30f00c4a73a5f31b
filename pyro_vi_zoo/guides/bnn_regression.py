"""The hand-written mean-field guide for :mod:`pyro_vi_zoo.models.bnn_regression`.

Bayes by Backprop (Blundell et al. 2015, "Weight Uncertainty in Neural
Networks"): an independent Normal per weight and bias, ``q(w) = Normal(mu, softplus(rho))``,
and a LogNormal for the noise scale ``sigma``.

Initialisation, and why:

- locations as :class:`torch.nn.Linear` initialises a layer (Kaiming/He uniform,
  ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` for weights and biases), so the first
  steps train a network that is not dead and not saturated;
- scales ``softplus(rho)`` start at ``init_scale`` (default 0.01): small against
  the location spread, so early gradients are not drowned in sampling noise
  (Blundell et al. start rho at a small constant for the same reason), yet
  large enough that Adam grows them to posterior size in a few hundred steps;
- ``sigma`` starts at the standard deviation of the training targets (the noise
  of a constant predictor) with log-scale 0.01.

Parameter names are the model's site names with ``_loc`` / ``_scale_raw``
suffixes; every initial value is made on the device of ``x``.
"""

import math

import pyro
import pyro.distributions as dist
import torch
from torch.nn import functional as F

from ..models.bnn_regression import inverse_softplus, layer_sizes

#: the guide's parameters are named ``bnn_regression.<name>``, apart from any other model's in one param store
PREFIX = "bnn_regression"

__all__ = ["bnn_regression_guide", "DEFAULT_INIT_SCALE"]

DEFAULT_INIT_SCALE = 0.01


def bnn_regression_guide(x: torch.Tensor, y: torch.Tensor = None, *, net=None, hidden=(50,), prior_scale: float = 1.0,
                         noise_prior_scale: float = 1.0, subsample_size: int = None, subsample=None,
                         init_scale: float = DEFAULT_INIT_SCALE):
    """Mean-field guide: a Normal per weight and bias of every layer, a LogNormal for ``sigma``.

    Takes the model's arguments (:func:`~pyro_vi_zoo.models.bnn_regression.bnn_regression`);
    the layer sizes come from ``net`` when given, else from ``x`` and ``hidden``.
    ``prior_scale``, ``noise_prior_scale``, ``subsample_size`` and ``subsample`` are accepted so
    one keyword dict binds both model and guide; the guide has no local latents.
    """
    sizes = net.sizes if net is not None else layer_sizes(x.shape[-1], hidden)
    for index, (fan_in, fan_out) in enumerate(sizes):
        _sample_normal(f"layers.{index}.weight", (fan_out, fan_in), fan_in, init_scale, x)
        _sample_normal(f"layers.{index}.bias", (fan_out,), fan_in, init_scale, x)
    _sample_noise_scale(x, y, init_scale)


def _sample_normal(name: str, shape, fan_in: int, init_scale: float, x: torch.Tensor) -> torch.Tensor:
    bound = 1.0 / math.sqrt(fan_in)
    loc = pyro.param(f"{PREFIX}.{name}_loc", lambda: x.new_empty(shape).uniform_(-bound, bound))
    scale_raw = pyro.param(f"{PREFIX}.{name}_scale_raw", lambda: x.new_full(shape, inverse_softplus(init_scale)))
    return pyro.sample(name, dist.Normal(loc, F.softplus(scale_raw)).to_event(len(shape)))


def _sample_noise_scale(x: torch.Tensor, y: torch.Tensor, init_scale: float) -> torch.Tensor:
    loc = pyro.param(f"{PREFIX}.sigma_loc", lambda: torch.log(_target_scale(x, y)))
    scale_raw = pyro.param(f"{PREFIX}.sigma_scale_raw", lambda: x.new_tensor(inverse_softplus(init_scale)))
    return pyro.sample("sigma", dist.LogNormal(loc, F.softplus(scale_raw)))


def _target_scale(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if y is None or y.numel() < 2:
        return x.new_tensor(1.0)
    return y.detach().std().clamp(min=1e-3).to(x.device)

