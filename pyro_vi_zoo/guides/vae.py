"""Amortised guides for the VAE (:mod:`pyro_vi_zoo.models.vae`): an encoder maps each image to its q(z | x).

* :func:`vae_mean_field_guide`: a diagonal Normal per image, loc and scale from an
  :class:`Encoder` (Kingma & Welling, "Auto-encoding variational Bayes", ICLR 2014),
  mirrored on the decoder as in Burda, Grosse & Salakhutdinov, "Importance
  weighted autoencoders", ICLR 2016 (784 -> 200 -> 200 -> 50, tanh).
* :func:`vae_iaf_guide`: the same diagonal Normal pushed through inverse
  autoregressive flows conditioned on the encoder's last hidden layer (Kingma,
  Salimans, Jozefowicz, Chen, Sutskever & Welling, "Improved variational inference
  with inverse autoregressive flow", NeurIPS 2016). This is the richer guide that
  separates the two parts of the inference gap (Cremer, Li & Duvenaud, "Inference
  suboptimality in variational autoencoders", ICML 2018): with a more flexible
  family per image, what remains of the gap is the amortisation's.

Why an IAF rather than a low-rank-plus-diagonal Gaussian: the low-rank density
needs a Cholesky factor of its capacitance matrix each step, and
``torch.linalg.cholesky`` checks for failure by reading a flag back to the host,
which breaks capture of the step in a CUDA graph (see DESIGN.md, Devices and
speed). An IAF samples and scores its own samples with masked matrix products
only, gives full (not rank-r) dependence between the latent dimensions, and is the
published amortised answer to the same question.

Both guides take the model's arguments and use its plate, so the same
``subsample`` (the batch's positions in the training set) and ``scale_to_full_data``
scale model and guide alike.

* :class:`FreeNormal`: no encoder, one free diagonal Normal per image (a
  non-amortised guide, like ``AutoNormal`` with ``create_plates``), which can start
  from an encoder's output. Fitted on test images with the decoder frozen, its
  optimum is the best q of the encoder's family for each image, so its ELBO minus
  the encoder's is the amortisation gap (Cremer, Li & Duvenaud 2018).
"""

from typing import Optional, Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions.transforms import ConditionalAffineAutoregressive
from pyro.nn import ConditionalAutoRegressiveNN
from torch import nn
from torch.nn import functional as F

from ..errors import ZooError
from ..models.vae import HIDDEN_SIZES, IMAGE_SIZE, LATENT_DIM, data_plate, multilayer_perceptron

__all__ = ["Encoder", "IAFEncoder", "FreeNormal", "vae_mean_field_guide", "vae_iaf_guide", "MIN_SCALE"]

#: keeps q's scales away from zero, where log q and its gradients blow up
MIN_SCALE = 1e-4


class Encoder(nn.Module):
    """784 -> hidden layers -> (loc, scale) of a diagonal Normal over ``z`` per image.

    The scale is ``softplus(.) + MIN_SCALE``: unlike ``exp`` it grows only linearly,
    so one large pre-activation early in training cannot blow the ELBO up.
    """

    def __init__(self, latent_dim: int = LATENT_DIM, hidden_sizes: Sequence[int] = HIDDEN_SIZES,
                 activation: str = "tanh", image_size: int = IMAGE_SIZE):
        super().__init__()
        self.latent_dim = latent_dim
        self.hidden = multilayer_perceptron(image_size, hidden_sizes, activation)
        self.feature_size = hidden_sizes[-1] if hidden_sizes else image_size
        self.loc = nn.Linear(self.feature_size, latent_dim)
        self.raw_scale = nn.Linear(self.feature_size, latent_dim)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The last hidden layer for images ``x`` (..., 784)."""
        return self.hidden(x)

    def normal_parameters(self, features: torch.Tensor):
        """``(loc, scale)`` of q(z | x) from the last hidden layer."""
        return self.loc(features), F.softplus(self.raw_scale(features)) + MIN_SCALE

    def forward(self, x: torch.Tensor):
        return self.normal_parameters(self.features(x))


class IAFEncoder(Encoder):
    """An :class:`Encoder` plus ``num_flows`` affine IAF steps conditioned on its last hidden layer.

    Each step is a MADE network (Germain et al. 2015) over ``z`` and the context,
    ``flow_hidden_sizes`` wide, in the numerically stable form of Kingma et al. 2016
    (``z <- s * z + (1 - s) * m``, ``s`` a sigmoid). The variable order is reversed
    between steps, so every latent dimension can depend on every other.
    """

    def __init__(self, latent_dim: int = LATENT_DIM, hidden_sizes: Sequence[int] = HIDDEN_SIZES,
                 activation: str = "tanh", image_size: int = IMAGE_SIZE, num_flows: int = 2,
                 flow_hidden_sizes: Sequence[int] = (200,)):
        super().__init__(latent_dim, hidden_sizes, activation, image_size)
        if num_flows < 1:
            raise ZooError(f"num_flows must be at least 1, got {num_flows}; use Encoder for no flow.")
        self.flows = nn.ModuleList(
            ConditionalAffineAutoregressive(
                ConditionalAutoRegressiveNN(latent_dim, self.feature_size, list(flow_hidden_sizes),
                                            permutation=_alternating_order(latent_dim, step)),
                stable=True,
            )
            for step in range(num_flows)
        )

    def forward(self, x: torch.Tensor):
        """``(loc, scale, transforms)``: the base Normal's parameters and the flows conditioned on ``x``."""
        features = self.features(x)
        loc, scale = self.normal_parameters(features)
        return loc, scale, [flow.condition(features) for flow in self.flows]


def _alternating_order(size: int, step: int) -> torch.Tensor:
    order = torch.arange(size)
    return order if step % 2 == 0 else order.flip(0)


def vae_mean_field_guide(x: torch.Tensor, *, encoder: Encoder, latent_dim: int,
                         num_examples: Optional[int] = None, subsample: Optional[torch.Tensor] = None,
                         scale_to_full_data: bool = True) -> None:
    """The amortised mean-field guide: z[n] ~ Normal(loc(x[n]), scale(x[n])), independent dimensions.

    Same arguments as :func:`~pyro_vi_zoo.models.vae.vae` (``latent_dim`` is fixed
    by the encoder and accepted so one set of keyword arguments serves both);
    ``x`` is required, since q(z | x) is a function of the image.
    """
    _require_images(x)
    encoder = pyro.module("encoder", encoder)
    with data_plate(x, num_examples, subsample, x.device, scale_to_full_data):
        loc, scale = encoder(x)
        pyro.sample("z", dist.Normal(loc, scale).to_event(1))


def vae_iaf_guide(x: torch.Tensor, *, encoder: IAFEncoder, latent_dim: int,
                  num_examples: Optional[int] = None, subsample: Optional[torch.Tensor] = None,
                  scale_to_full_data: bool = True) -> None:
    """The amortised IAF guide: a diagonal Normal per image pushed through flows conditioned on the image.

    Same arguments as :func:`vae_mean_field_guide`, with an :class:`IAFEncoder`.
    Scoring the guide's own samples reuses the flows' cached forward pass, so no
    sequential inverse is ever computed in training.
    """
    _require_images(x)
    encoder = pyro.module("encoder", encoder)
    with data_plate(x, num_examples, subsample, x.device, scale_to_full_data):
        loc, scale, transforms = encoder(x)
        base = dist.Normal(loc, scale).to_event(1)
        pyro.sample("z", dist.TransformedDistribution(base, transforms))


class FreeNormal(nn.Module):
    """A non-amortised guide: a free diagonal Normal q(z[n]) = N(loc[n], scale[n]) per image, no encoder.

    ``loc`` and ``scale`` (num_examples, latent_dim) start at ``init_loc`` and
    ``init_scale`` (e.g. an encoder's output, or 0 and 1: the prior); the scale is
    ``softplus(raw) + MIN_SCALE`` like the :class:`Encoder`'s. Called with the
    model's arguments; ``subsample`` picks the batch's rows. Registered with
    ``pyro.module("free_normal", ...)``, so the engine finds its parameters.
    """

    def __init__(self, init_loc: torch.Tensor, init_scale: torch.Tensor):
        super().__init__()
        self.loc = nn.Parameter(init_loc.detach().clone())
        raw = init_scale.detach().clamp_min(2 * MIN_SCALE) - MIN_SCALE
        self.raw_scale = nn.Parameter(raw + torch.log(-torch.expm1(-raw)))  # the inverse of softplus

    @property
    def scale(self) -> torch.Tensor:
        return F.softplus(self.raw_scale) + MIN_SCALE

    def forward(self, x: Optional[torch.Tensor], *, num_examples: Optional[int] = None,
                subsample: Optional[torch.Tensor] = None, scale_to_full_data: bool = True, **model_options) -> None:
        pyro.module("free_normal", self)
        num_examples = num_examples or self.loc.shape[0]
        if subsample is None and x is not None and x.shape[0] != num_examples:
            raise ZooError(f"FreeNormal holds one row per image ({num_examples}) but got {x.shape[0]} images and "
                           "no subsample; pass the batch's positions as subsample.")
        with data_plate(x, num_examples, subsample, self.loc.device, scale_to_full_data):
            loc, scale = self.loc, self.scale
            if subsample is not None:
                loc, scale = loc.index_select(0, subsample), scale.index_select(0, subsample)
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))


def _require_images(x) -> None:
    if x is None:
        raise ZooError("an amortised VAE guide needs the images x: q(z | x) is a function of them; "
                       "to draw new images, run the model alone with x=None and num_examples.")
