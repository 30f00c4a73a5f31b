"""Bayesian I-AutoRec: an autoencoder over rating vectors with Normal priors on its weights.

The model (Sedhain, Menon, Sanner and Xie, "AutoRec: Autoencoders Meet
Collaborative Filtering", WWW 2015). Each row is one item's (I-AutoRec) or one
user's (U-AutoRec) vector of ratings ``r`` over the columns, with unobserved
entries set to 0 in the *input* and an observation mask ``m``::

    V  ~ Normal(0, prior_scale)        (hidden, columns)   "encoder.weight"
    mu ~ Normal(0, bias_prior_scale)   (hidden,)           "encoder.bias"
    W  ~ Normal(0, prior_scale)        (columns, hidden)   "decoder.weight"
    b  ~ Normal(0, bias_prior_scale)   (columns,)          "decoder.bias"
    sigma ~ HalfNormal(noise_prior_scale)                  "sigma" (unless the noise is fixed)

    r_hat = f(W g(V r + mu) + b)       g = sigmoid, f = identity by default
    r_uj  ~ Normal(r_hat_uj, sigma)    only where m_uj = 1  (the observed site "ratings")

Unobserved entries are masked out of the likelihood, so they contribute nothing.

The paper's objective and the prior scale. AutoRec minimises::

    sum_obs (r - r_hat)^2 + (lambda / 2) (||W||^2 + ||V||^2)

With Gaussian noise ``sigma`` and Normal(0, s^2) priors on ``W`` and ``V``, the
negative log joint is::

    1/(2 sigma^2) sum_obs (r - r_hat)^2 + 1/(2 s^2) (||W||^2 + ||V||^2) + const
      = 1/(2 sigma^2) [ sum_obs (r - r_hat)^2 + (sigma^2 / s^2) (||W||^2 + ||V||^2) ] + const,

so MAP with fixed ``sigma`` minimises the paper's loss exactly when
``lambda / 2 = sigma^2 / s^2``, that is::

    lambda = 2 sigma^2 / s^2        s = sigma * sqrt(2 / lambda)

(:func:`weight_decay_for_prior_scale`, :func:`prior_scale_for_weight_decay`).
The paper does not regularise the biases ``mu`` and ``b``; here they get their
own *wide* Normal prior (``bias_prior_scale``, default 10 rating units, nearly
flat over a 1..5 scale) so the posterior stays proper; set it equal to
``prior_scale`` to regularise them like the weights. The paper's ``lambda`` is
for the full-data sum; minibatches keep that meaning, because the plate scales
the likelihood by num_rows / batch.

Noise. ``noise_scale=None`` learns ``sigma`` under a HalfNormal(``noise_prior_scale``)
prior (default 1 rating unit: it puts 95% of its mass below 2 stars, above any
residual spread on a 1..5 scale, and stays proper down to zero, as in the
``bnn_regression`` family). A float fixes ``sigma`` (stored as a buffer), which
is what makes MAP the paper's objective.

Every prior constant is a registered buffer, so ``.to(device)`` moves it and no
Python float becomes a tensor at each call; the forward pass uses batched
matrix products, so weights with leading sample dimensions (vectorised ELBO
particles, ``Predictive(parallel=True)``) give one reconstruction per sample.
"""

import math
from typing import Callable, Dict, Mapping, Optional, Tuple

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule, PyroSample
from torch.nn import functional as F

from .bnn_regression import linear_forward, without_data_slot
from .distributions import HalfNormal

__all__ = [
    "ACTIVATIONS",
    "AutoRecLayer",
    "BayesianAutoRec",
    "autorec",
    "predict_mean",
    "prior_scale_for_weight_decay",
    "weight_decay_for_prior_scale",
]

ACTIVATIONS: Dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "sigmoid": torch.sigmoid,
    "identity": lambda value: value,
    "relu": F.relu,
    "tanh": torch.tanh,
    "elu": F.elu,
}
WEIGHT_SITES = ("encoder.weight", "encoder.bias", "decoder.weight", "decoder.bias")


def weight_decay_for_prior_scale(prior_scale: float, noise_scale: float) -> float:
    """The paper's ``lambda`` that a Normal(0, ``prior_scale``) weight prior means at noise ``noise_scale``.

    ``lambda = 2 sigma^2 / s^2`` (module docstring).
    """
    return 2.0 * noise_scale**2 / prior_scale**2


def prior_scale_for_weight_decay(weight_decay: float, noise_scale: float) -> float:
    """The weight prior scale ``s = sigma * sqrt(2 / lambda)`` whose MAP is AutoRec with ``lambda = weight_decay``."""
    if not weight_decay > 0:
        raise ValueError(f"weight_decay (lambda) must be positive, got {weight_decay}")
    return noise_scale * math.sqrt(2.0 / weight_decay)


def _activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def predict_mean(inputs: torch.Tensor, sites: Mapping[str, torch.Tensor], activation: str = "sigmoid",
                 output_activation: str = "identity") -> torch.Tensor:
    """The reconstruction ``f(W g(V r + mu) + b)`` for given weights, without sampling anything.

    ``inputs`` is ``(B, columns)``; ``sites`` maps the model's site names
    (``encoder.weight``, ``encoder.bias``, ``decoder.weight``, ``decoder.bias``)
    to values: a point estimate (``AutoDelta(...).median()``) gives ``(B, columns)``;
    a batch of posterior draws with a leading dimension ``S`` gives ``(S, B, columns)``.
    """
    encoder_weight, encoder_bias, decoder_weight, decoder_bias = (sites[name] for name in WEIGHT_SITES)
    hidden = _activation(activation)(linear_forward(inputs, encoder_weight, encoder_bias))
    return _activation(output_activation)(linear_forward(hidden, decoder_weight, decoder_bias))


class AutoRecLayer(PyroModule):
    """A linear layer with latent weight and bias: Normal(0, weight_prior_scale) and Normal(0, bias_prior_scale)."""

    def __init__(self, in_features: int, out_features: int, weight_prior_scale: float, bias_prior_scale: float):
        super().__init__()
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.register_buffer("prior_loc", torch.tensor(0.0))
        self.register_buffer("weight_prior_scale", torch.tensor(float(weight_prior_scale)))
        self.register_buffer("bias_prior_scale", torch.tensor(float(bias_prior_scale)))
        self.weight = PyroSample(lambda layer: layer.prior(layer.weight_prior_scale, layer.weight_shape))
        self.bias = PyroSample(lambda layer: layer.prior(layer.bias_prior_scale, (layer.out_features,)))

    @property
    def weight_shape(self) -> Tuple[int, int]:
        return self.out_features, self.in_features

    def prior(self, scale: torch.Tensor, shape) -> dist.Distribution:
        """The elementwise Normal prior over a tensor of ``shape``, built from the buffers."""
        return dist.Normal(self.prior_loc, scale).expand(shape).to_event(len(shape))

    def sample(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(weight, bias)``, drawn from the prior or supplied by a guide, with the rows plate's slot removed."""
        return without_data_slot(self.weight, 2), without_data_slot(self.bias, 1)


class BayesianAutoRec(PyroModule):
    """Bayesian I-AutoRec (or U-AutoRec on the transposed matrix) as a Pyro model.

    Args:
        num_columns: length of a row's rating vector (users for I-AutoRec, items for U-AutoRec).
        hidden: number of hidden units (the paper's k; 500 by default).
        prior_scale: scale ``s`` of the Normal prior on ``encoder.weight`` (V) and ``decoder.weight`` (W);
            the paper's ``lambda`` is ``2 sigma^2 / s^2`` (module docstring).
        bias_prior_scale: scale of the Normal prior on the biases (the paper leaves them unregularised;
            the default 10 is nearly flat on a rating scale).
        noise_scale: ``None`` learns ``sigma`` (HalfNormal prior); a float fixes it.
        noise_prior_scale: scale of the HalfNormal prior on a learned ``sigma``.
        activation: hidden activation ``g`` (default sigmoid); output_activation: ``f`` (default identity).

    Call as ``model(inputs, targets=None, mask=None, *, num_rows=None, subsample=None)``:
    ``inputs`` ``(B, columns)`` the rows' training ratings (0 where unobserved),
    ``targets`` ``(B, columns)`` the ratings scored by the site ``"ratings"`` (``None`` to
    sample predictions), ``mask`` ``(B, columns)`` bool, which target entries are observed
    (``None``: all). The plate ``"rows"`` has size ``num_rows`` (default ``B``); for a
    minibatch pass the batch rows' positions as ``subsample`` so the likelihood is
    scaled by ``num_rows / B``. Returns the reconstruction ``(..., B, columns)``.
    """

    def __init__(self, num_columns: int, hidden: int = 500, prior_scale: float = 1.0, bias_prior_scale: float = 10.0,
                 noise_scale: Optional[float] = None, noise_prior_scale: float = 1.0, activation: str = "sigmoid",
                 output_activation: str = "identity"):
        _activation(activation), _activation(output_activation)
        if int(num_columns) < 1 or int(hidden) < 1:
            raise ValueError(f"num_columns and hidden must be positive, got {num_columns} and {hidden}")
        # module-local like BayesianMLP: the model has no parameters, so it runs under either setting
        with pyro.settings.context(module_local_params=True):
            super().__init__()
            self.num_columns, self.hidden = int(num_columns), int(hidden)
            self.activation, self.output_activation = activation, output_activation
            self.encoder = AutoRecLayer(num_columns, hidden, prior_scale, bias_prior_scale)
            self.decoder = AutoRecLayer(hidden, num_columns, prior_scale, bias_prior_scale)
            self.learns_noise = noise_scale is None
            if self.learns_noise:
                self.register_buffer("noise_prior_scale", torch.tensor(float(noise_prior_scale)))
                self.sigma = PyroSample(lambda module: HalfNormal(module.noise_prior_scale))
            else:
                self.register_buffer("fixed_noise_scale", torch.tensor(float(noise_scale)))

    @property
    def device(self) -> torch.device:
        return self.encoder.prior_loc.device

    @property
    def dtype(self) -> torch.dtype:
        return self.encoder.prior_loc.dtype

    def site_shapes(self) -> Dict[str, Tuple[Tuple[int, ...], int]]:
        """Each weight site's ``(shape, fan_in)``: what a guide needs to build its parameters."""
        return {
            "encoder.weight": (self.encoder.weight_shape, self.num_columns),
            "encoder.bias": ((self.hidden,), self.num_columns),
            "decoder.weight": (self.decoder.weight_shape, self.hidden),
            "decoder.bias": ((self.num_columns,), self.hidden),
        }

    def sample_weights(self) -> Dict[str, torch.Tensor]:
        """The four weight sites by name; call outside the rows plate, so they are global latents."""
        encoder_weight, encoder_bias = self.encoder.sample()
        decoder_weight, decoder_bias = self.decoder.sample()
        return dict(zip(WEIGHT_SITES, (encoder_weight, encoder_bias, decoder_weight, decoder_bias)))

    def noise(self) -> torch.Tensor:
        """``sigma``: the latent site (shape ``()`` or ``(..., S, 1)`` under sample plates) or the fixed buffer."""
        return self.sigma if self.learns_noise else self.fixed_noise_scale

    def predict_mean(self, inputs: torch.Tensor, sites: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """:func:`predict_mean` with this model's activations (for MAP / point-estimate predictions)."""
        return predict_mean(inputs, sites, self.activation, self.output_activation)

    def forward(self, inputs: torch.Tensor, targets: Optional[torch.Tensor] = None, mask: Optional[torch.Tensor] = None,
                *, num_rows: Optional[int] = None, subsample: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.device != inputs.device or self.dtype != inputs.dtype:  # its priors follow the data
            self.to(inputs.device, inputs.dtype)
        batch = inputs.shape[-2]
        size = batch if num_rows is None else int(num_rows)
        if subsample is None and size != batch:
            raise ValueError(f"num_rows={size} differs from the batch of {batch} rows; pass the batch rows' "
                             "positions as subsample= so the likelihood is scaled by num_rows / batch")
        weights = self.sample_weights()
        # sigma is () or (..., S, 1); one more slot lets it broadcast over the event (column) dim
        sigma = self.noise().unsqueeze(-1)
        with pyro.plate("rows", size, subsample=subsample, device=inputs.device):
            mean = self.predict_mean(inputs, weights)
            likelihood = dist.Normal(mean, sigma)
            if mask is not None:
                likelihood = likelihood.mask(mask)
            pyro.sample("ratings", likelihood.to_event(1), obs=targets)
        return mean


def autorec(inputs: torch.Tensor, targets: Optional[torch.Tensor] = None, mask: Optional[torch.Tensor] = None, *,
            net: Optional[BayesianAutoRec] = None, num_rows: Optional[int] = None,
            subsample: Optional[torch.Tensor] = None, **hyper) -> torch.Tensor:
    """The AutoRec model as a plain Pyro model function.

    Pass a :class:`BayesianAutoRec` as ``net`` to reuse one (build it once and bind it
    with ``functools.partial``); otherwise one is built from ``hyper`` (the constructor's
    keywords) for the columns of ``inputs``, on their device. Shapes, sample sites and the returned
    reconstruction are :class:`BayesianAutoRec`'s: ``inputs``, ``targets`` and ``mask`` ``(B, columns)``.
    """
    if net is None:
        with torch.device(inputs.device):
            net = BayesianAutoRec(inputs.shape[-1], **hyper)
    return net(inputs, targets, mask, num_rows=num_rows, subsample=subsample)
