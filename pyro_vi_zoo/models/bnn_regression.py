"""Bayesian neural-network regression: an MLP with Normal priors on every weight.

The model (Blundell et al. 2015, "Weight Uncertainty in Neural Networks"; the
UCI protocol of Hernández-Lobato & Adams 2015, "Probabilistic Backpropagation")::

    W_l, b_l ~ Normal(0, prior_scale)          for every layer l (elementwise)
    sigma    ~ HalfNormal(noise_prior_scale)
    y_i      ~ Normal(f(x_i; W, b), sigma)     f = MLP with ReLU hidden layers

Noise prior: a HalfNormal puts its mode at zero and keeps a heavy enough
shoulder for noise up to a few prior scales, so it suits both near noiseless
targets (UCI naval, energy) and noisy ones once targets are standardised, and
it stays proper without a lower bound. The default scale 1.0 matches
standardised targets; raise it for raw targets with large noise.

The network is a :class:`~pyro.nn.PyroModule` whose weights are
:class:`~pyro.nn.PyroSample` attributes; prior constants are registered buffers,
so ``.to(device)`` moves them, and :meth:`BayesianMLP.forward` moves the module
to the device of ``x`` when they differ. The forward pass uses batched matrix
products, so weights with leading sample dimensions (vectorised ELBO particles,
``Predictive(parallel=True)``) give one prediction per sample.

Also here: :class:`MaximumLikelihoodMLP`, the same network without priors, a
point estimate trained on the same Gaussian likelihood with a learned noise
scale (the ``mle`` baseline row), and :func:`fit_maximum_likelihood`.
"""

import math
from typing import Sequence, Tuple

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule, PyroSample
from torch import nn
from torch.nn import functional as F

from .distributions import HalfNormal
from .plates import minibatch_plate

__all__ = [
    "BayesianLinear",
    "BayesianMLP",
    "MaximumLikelihoodMLP",
    "bnn_regression",
    "fit_maximum_likelihood",
    "without_data_slot",
    "layer_sizes",
    "linear_forward",
]


def layer_sizes(in_features: int, hidden: Sequence[int] = (50,)) -> Tuple[Tuple[int, int], ...]:
    """The ``(in, out)`` size of every linear layer of an MLP with one output."""
    widths = [int(in_features), *(int(h) for h in hidden), 1]
    if any(w < 1 for w in widths):
        raise ValueError(f"layer widths must be positive, got {widths}")
    return tuple(zip(widths[:-1], widths[1:]))


def linear_forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``x @ weight^T + bias`` for weights with any leading sample dimensions.

    ``x`` is ``(..., n, in)``, ``weight`` ``(..., out, in)``, ``bias`` ``(..., out)``;
    leading dimensions broadcast, so ``(n, in)`` inputs and ``(S, out, in)``
    weights give ``(S, n, out)``.
    """
    return torch.matmul(x, weight.transpose(-1, -2)) + bias.unsqueeze(-2)


def without_data_slot(value: torch.Tensor, event_dim: int) -> torch.Tensor:
    """A global latent ``value`` with the size-1 slot of the ``data`` plate (batch dim -1) removed.

    Global sites sit outside the ``data`` plate (dim -1), so under leading sample
    dimensions (Pyro's vectorised particles, a plate at dim -2) a weight matrix
    arrives as ``(S, 1, out, in)``. Dropping the data slot gives ``(S, out, in)``,
    whose products with ``(n, in)`` inputs are ``(S, n, out)``: sample dims left of
    the data dim, as the plates expect. ``Predictive(parallel=True)`` already hands
    guide samples of sites with event dims as ``(S, *event)``; those pass unchanged.
    """
    batch_dims = value.dim() - event_dim
    return value.squeeze(batch_dims - 1) if batch_dims > 0 else value  # squeeze(dim) keeps a dim not of size 1


class BayesianLinear(PyroModule):
    """A linear layer whose weight and bias are latent, elementwise Normal(loc, scale) a priori."""

    def __init__(self, in_features: int, out_features: int, prior_scale: float = 1.0, prior_loc: float = 0.0):
        super().__init__()
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.register_buffer("prior_loc", torch.tensor(float(prior_loc)))
        self.register_buffer("prior_scale", torch.tensor(float(prior_scale)))
        self.weight = PyroSample(lambda layer: layer.prior((layer.out_features, layer.in_features)))
        self.bias = PyroSample(lambda layer: layer.prior((layer.out_features,)))

    def prior(self, shape) -> dist.Distribution:
        """The elementwise Normal prior over a weight tensor of ``shape``, built from the buffers."""
        return dist.Normal(self.prior_loc, self.prior_scale).expand(shape).to_event(len(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear_forward(x, self.weight, self.bias)


class BayesianMLP(PyroModule):
    """A Bayesian MLP regression model: Normal priors on all weights, Gaussian noise with a HalfNormal prior.

    Args:
        in_features: number of input columns.
        hidden: widths of the ReLU hidden layers (default one layer of 50, the
            UCI protocol of Hernández-Lobato & Adams 2015).
        prior_scale: standard deviation of the Normal(0, prior_scale) prior on every weight and bias.
        noise_prior_scale: scale of the HalfNormal prior on the noise standard deviation ``sigma``.

    Sample sites: ``layers.<l>.weight`` ``(out, in)``, ``layers.<l>.bias`` ``(out,)``,
    ``sigma`` ``()``, and the observed ``y`` in the plate ``data``. Call as
    ``net(x, y=None, subsample_size=None)``; returns the mean prediction
    ``(..., n)`` for the (sub)sampled rows.
    """

    def __init__(self, in_features: int, hidden: Sequence[int] = (50,), prior_scale: float = 1.0,
                 noise_prior_scale: float = 1.0):
        # Built as module-local so the network also runs under pyro.settings module_local_params=True
        # (Pyro's PyroModule keeps that choice from construction); it has no parameters either way.
        with pyro.settings.context(module_local_params=True):
            super().__init__()
            self.hidden = tuple(int(h) for h in hidden)
            self.sizes = layer_sizes(in_features, self.hidden)
            self.layers = PyroModule[nn.ModuleList]([
                BayesianLinear(n_in, n_out, prior_scale) for n_in, n_out in self.sizes
            ])
            self.register_buffer("noise_prior_scale", torch.tensor(float(noise_prior_scale)))
            self.sigma = PyroSample(lambda module: HalfNormal(module.noise_prior_scale))

    def sample_weights(self):
        """The ``(weight, bias)`` of every layer: samples from the prior, or the values a guide supplies.

        Call outside the data plate, so the weights are global latent variables.
        """
        return [(without_data_slot(layer.weight, 2), without_data_slot(layer.bias, 1)) for layer in self.layers]

    @staticmethod
    def mean(x: torch.Tensor, weights) -> torch.Tensor:
        """The network output ``(..., n)`` at inputs ``x`` ``(n, in)`` for ``weights`` with any leading dims."""
        hidden = x
        for weight, bias in weights[:-1]:
            hidden = F.relu(linear_forward(hidden, weight, bias))
        weight, bias = weights[-1]
        return linear_forward(hidden, weight, bias).squeeze(-1)

    def forward(self, x: torch.Tensor, y: torch.Tensor = None, subsample_size: int = None,
                subsample: torch.Tensor = None) -> torch.Tensor:
        if self.noise_prior_scale.device != x.device or self.noise_prior_scale.dtype != x.dtype:  # priors follow the data
            self.to(x.device, x.dtype)
        weights = self.sample_weights()
        sigma = self.sigma  # batch shape () or (..., S, 1): broadcasts against the (..., S, n) mean
        with minibatch_plate(x.shape[0], subsample_size, subsample, x.device) as index:
            minibatch = subsample_size is not None or subsample is not None
            x_batch = x.index_select(0, index) if minibatch else x
            y_batch = y.index_select(0, index) if (y is not None and minibatch) else y
            mean = self.mean(x_batch, weights)
            pyro.sample("y", dist.Normal(mean, sigma), obs=y_batch)
        return mean


def bnn_regression(x: torch.Tensor, y: torch.Tensor = None, *, net: BayesianMLP = None, hidden=(50,),
                   prior_scale: float = 1.0, noise_prior_scale: float = 1.0, subsample_size: int = None,
                   subsample: torch.Tensor = None):
    """The Bayesian MLP regression model as a plain Pyro model function.

    Pass a :class:`BayesianMLP` as ``net`` to reuse one (the usual case: build it
    once, bind it with ``functools.partial``); otherwise one is built from
    ``hidden``, ``prior_scale`` and ``noise_prior_scale`` for the columns of ``x``.
    ``x`` is ``(n, in)``, ``y`` ``(n,)`` or ``None``, which samples predictions at ``x``; the sample
    sites and the returned mean ``(..., n)`` are :class:`BayesianMLP`'s.
    """
    if net is None:
        with torch.device(x.device):
            net = BayesianMLP(x.shape[-1], hidden, prior_scale, noise_prior_scale)
    return net(x, y, subsample_size=subsample_size, subsample=subsample)


class MaximumLikelihoodMLP(nn.Module):
    """The same MLP as :class:`BayesianMLP` as a point estimate, with a learned noise scale.

    Initialised like :class:`torch.nn.Linear` (Kaiming/He uniform); the noise
    standard deviation is ``softplus(raw_sigma)``, initialised at ``init_sigma``.
    """

    def __init__(self, in_features: int, hidden: Sequence[int] = (50,), init_sigma: float = 1.0):
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(n_in, n_out) for n_in, n_out in layer_sizes(in_features, hidden)])
        self.raw_sigma = nn.Parameter(torch.tensor(inverse_softplus(init_sigma)))

    @property
    def sigma(self) -> torch.Tensor:
        return F.softplus(self.raw_sigma)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = x
        for layer in self.layers[:-1]:
            hidden = F.relu(layer(hidden))
        return self.layers[-1](hidden).squeeze(-1)

    def log_likelihood(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-row Gaussian log density of ``y`` under the point estimate."""
        return dist.Normal(self(x), self.sigma).log_prob(y)


def fit_maximum_likelihood(x: torch.Tensor, y: torch.Tensor, hidden=(50,), num_steps: int = 2000, lr: float = 1e-2,
                           lr_decay: float = 1.0, batch_size: int = None, seed: int = 0) -> MaximumLikelihoodMLP:
    """Train a :class:`MaximumLikelihoodMLP` on ``(x, y)`` with Adam by maximising the mean log likelihood.

    The schedule matches the SVI loop's: the learning rate decays exponentially
    to ``lr * lr_decay`` over ``num_steps``. ``batch_size=None`` uses the full
    batch; otherwise each step draws a random minibatch. Initialisation and
    minibatches are seeded with ``seed`` (``None``: drawn from torch's global CPU stream, as a fit
    without a seed is). Returns the trained network (on ``x``'s device, in eval mode).
    """
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[], enabled=seed is not None), torch.device("cpu"):  # made on the host
        if seed is not None:
            torch.manual_seed(seed)
        net = MaximumLikelihoodMLP(x.shape[-1], hidden, init_sigma=float(y.std()) if len(y) > 1 else 1.0)
    net = net.to(x.device)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=lr_decay ** (1.0 / max(int(num_steps), 1)))
    n = x.shape[0]
    for _ in range(int(num_steps)):
        if batch_size is None or batch_size >= n:
            x_batch, y_batch = x, y
        else:
            index = torch.randint(n, (batch_size,), generator=generator, device="cpu").to(x.device)
            x_batch, y_batch = x[index], y[index]
        optimizer.zero_grad(set_to_none=True)
        loss = -net.log_likelihood(x_batch, y_batch).mean()
        loss.backward()
        optimizer.step()
        schedule.step()
    return net.eval()


def inverse_softplus(value: float) -> float:
    """The x with softplus(x) = ``value`` (> 0): how a positive starting value becomes a raw parameter."""
    return value + math.log(-math.expm1(-value))
