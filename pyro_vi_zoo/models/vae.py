"""Variational autoencoder's generative model: a Bernoulli decoder on a standard Normal latent.

    z[n] ~ Normal(0, I)                                   (latent_dim,)   local, one per image
    x[n] ~ Bernoulli(logits = decoder(z[n]))              (784,)          pixels independent given z

The model of Kingma & Welling, "Auto-encoding variational Bayes", ICLR 2014,
with the one-stochastic-layer architecture of Burda, Grosse & Salakhutdinov,
"Importance weighted autoencoders", ICLR 2016: latent 50, two deterministic
hidden layers of 200 tanh units, 784 Bernoulli logits.

The latent is local: every image has its own ``z`` inside the plate ``"data"``.
For minibatches the plate is told the training-set size ``num_examples`` and the
batch's positions ``subsample`` in the training set, so the log-likelihood is
scaled by N / batch (an unbiased estimate of the full-data ELBO) and a
non-amortised guide (``AutoNormal``) keeps one set of parameters per training
image and picks the batch's rows by ``subsample``.

``scale_to_full_data=False`` keeps the plate's full size N and the batch's
positions but leaves the batch's log-density unscaled. That is what Pyro's
``RenyiELBO`` (the IWAE bound at alpha = 0) needs under minibatches: it applies a
site's scale *inside* its log-mean-exp over particles, so with N / batch = s it
optimises sum_n log mean_k w_nk^s instead of s sum_n log mean_k w_nk, a tempered
objective that is not the IWAE bound (the zoo's ``--elbo iwae`` applies the scale
after the log-mean-exp). Every latent here is local, so dropping the scale only
multiplies the objective by a constant: the optimum is the same, and so is Adam's
path to it (Adam is invariant to a constant gradient scale).

The decoder is a :class:`Decoder` module (registered with ``pyro.module``, Pyro's
idiom) or a :class:`ParamStoreDecoder`, whose weights are ``pyro.param`` s
initialised afresh in each parameter store: the zoo's engine runs every fit in a
param-store scope of its own, so every fit then trains a decoder of its own.

Plates: only ``"data"`` at dim -1, so ``max_plate_nesting = 1``; vectorised ELBO
particles add a dimension on the left of ``z``, which the decoder broadcasts.
Nothing in the model reads a tensor's value back to the host, so a step can be
captured in a CUDA graph.
"""

import contextlib
from typing import Callable, Dict, Optional, Sequence, Union

import pyro
import pyro.distributions as dist
import torch
from torch import nn
from torch.func import functional_call

from ..errors import ZooError

__all__ = ["Decoder", "ParamStoreDecoder", "vae", "data_plate", "create_data_plate", "BatchScalePlate",
           "IMAGE_SIZE", "LATENT_DIM", "HIDDEN_SIZES", "ACTIVATIONS", "MAX_PLATE_NESTING"]

IMAGE_SIZE = 784
LATENT_DIM = 50
HIDDEN_SIZES = (200, 200)
ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU}
MAX_PLATE_NESTING = 1


def multilayer_perceptron(input_size: int, hidden_sizes: Sequence[int], activation: str) -> nn.Sequential:
    """Linear layers of ``hidden_sizes`` widths, each followed by ``activation`` ("tanh" or "relu")."""
    if activation not in ACTIVATIONS:
        raise ZooError(f"unknown activation {activation!r}; choose one of: {', '.join(ACTIVATIONS)}.")
    layers = []
    for width in hidden_sizes:
        layers += [nn.Linear(input_size, width), ACTIVATIONS[activation]()]
        input_size = width
    return nn.Sequential(*layers)


class Decoder(nn.Module):
    """``latent_dim`` -> hidden layers -> 784 Bernoulli logits (IWAE's net by default).

    Works on any leading shape: ``z`` of shape (..., latent_dim) gives logits of
    shape (..., 784), so vectorised particles pass straight through.
    """

    def __init__(self, latent_dim: int = LATENT_DIM, hidden_sizes: Sequence[int] = HIDDEN_SIZES,
                 activation: str = "tanh", image_size: int = IMAGE_SIZE):
        super().__init__()
        self.latent_dim, self.image_size = latent_dim, image_size
        self.hidden = multilayer_perceptron(latent_dim, hidden_sizes, activation)
        self.logits = nn.Linear(hidden_sizes[-1] if hidden_sizes else latent_dim, image_size)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.logits(self.hidden(z))


class ParamStoreDecoder:
    """A :class:`Decoder` whose weights are ``pyro.param`` s of the active parameter store.

    Each weight is registered like ``pyro.module("decoder", ...)`` registers a network's
    (``decoder$$$hidden.0.weight``, ...), but a store that lacks them gets a freshly
    initialised decoder, not the weights of one shared module. So a model bound to
    one ``ParamStoreDecoder`` can be fitted many times, each fit in a param-store
    scope of its own (as the zoo's engine runs them), and every fit trains, and is
    later scored with, its own decoder. Not an ``nn.Module``: it holds no weights.

    Under ``torch.no_grad()`` a store without these weights is left as it is: the call
    uses a throwaway initialisation. Traces that only read the model's sites and
    shapes (the runner's, before and between fits) so leave no decoder behind in the
    caller's parameter store, where the next model's decoder could collide with it.
    """

    def __init__(self, latent_dim: int = LATENT_DIM, hidden_sizes: Sequence[int] = HIDDEN_SIZES,
                 activation: str = "tanh", image_size: int = IMAGE_SIZE, device=None, name: str = "decoder"):
        self.options = dict(latent_dim=latent_dim, hidden_sizes=tuple(hidden_sizes), activation=activation,
                            image_size=image_size)
        self.latent_dim, self.name, self.device = latent_dim, name, device
        self.architecture = self._new()  # the forward pass only; its weights are never used
        self.weight_names = [name for name, _ in self.architecture.named_parameters()]
        self.param_names = {name: f"{self.name}$$${name}" for name in self.weight_names}

    def weights(self) -> Dict[str, torch.Tensor]:
        """The active store's decoder weights, by module name; a fresh initialisation where it has none."""
        store = pyro.get_param_store()
        if not torch.is_grad_enabled() and any(name not in store for name in self.param_names.values()):
            return self._fresh_weights()
        fresh = {}

        def initial(weight_name):
            def make():
                if not fresh:
                    fresh.update(self._fresh_weights())
                return fresh[weight_name]
            return make

        return {name: pyro.param(full_name, initial(name)) for name, full_name in self.param_names.items()}

    def _new(self) -> Decoder:
        """A freshly initialised decoder, made on this decoder's device (torch's default where none was given)."""
        with torch.device(self.device) if self.device is not None else contextlib.nullcontext():
            return Decoder(**self.options)

    def _fresh_weights(self) -> Dict[str, torch.Tensor]:
        decoder = self._new()
        return {name: value.detach().clone() for name, value in decoder.named_parameters()}

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        return functional_call(self.architecture, self.weights(), (z,))

    def module(self) -> Decoder:
        """A frozen :class:`Decoder` (no gradients, eval mode) holding a copy of the active store's weights."""
        decoder = self._new()
        with torch.no_grad():
            for name, value in self.weights().items():
                decoder.get_parameter(name).copy_(value)
        return decoder.requires_grad_(False).eval()


def vae(x: Optional[torch.Tensor], *, decoder: Union[Decoder, ParamStoreDecoder, Callable], latent_dim: int,
        num_examples: Optional[int] = None, subsample: Optional[torch.Tensor] = None,
        scale_to_full_data: bool = True) -> torch.Tensor:
    """The VAE's generative model over a batch of binary images ``x`` (batch, 784).

    Args:
        x: observed 0/1 images (batch, 784), or ``None`` to draw images from the prior.
        decoder: a :class:`Decoder` (registered with ``pyro.module("decoder", ...)``; a
            frozen one, ``requires_grad_(False).eval()``, is used as it is), or a
            :class:`ParamStoreDecoder` (weights in the active parameter store).
        latent_dim: size of each image's latent ``z``.
        num_examples: the training-set size N, the plate's full size (default: the
            batch size, i.e. no subsampling). With ``x=None`` and no ``subsample``
            it is the number of images to draw, and it is then required.
        subsample: a LongTensor (batch,) of the batch rows' positions in the
            training set, on the data's device. Without it a batch smaller than
            ``num_examples`` is still scaled by N / batch (an amortised guide needs
            no positions), but a per-example guide such as ``AutoNormal`` needs them.
        scale_to_full_data: scale the batch's log-density by N / batch (default), or
            not (see the module docstring: needed for the IWAE bound of ``RenyiELBO``).

    Returns the Bernoulli logits (..., batch, 784). Images must already be
    binarised (see :func:`pyro_vi_zoo.data.images.binarize`).
    """
    device = x.device if x is not None else _decoder_device(decoder)
    reference = torch.empty((), device=device) if x is None else x
    # made on the data's device each call: a Python float here would be a host copy per step
    prior_loc = reference.new_zeros(latent_dim)
    prior_scale = reference.new_ones(latent_dim)
    if isinstance(decoder, nn.Module) and any(p.requires_grad for p in decoder.parameters()):
        decoder = pyro.module("decoder", decoder)
    with data_plate(x, num_examples, subsample, device, scale_to_full_data):
        z = pyro.sample("z", dist.Normal(prior_loc, prior_scale).to_event(1))
        logits = decoder(z)
        pyro.sample("x", dist.Bernoulli(logits=logits).to_event(1), obs=x)
    return logits


def _decoder_device(decoder) -> torch.device:
    if isinstance(decoder, nn.Module):
        return next(decoder.parameters()).device
    return torch.device(getattr(decoder, "device", None) or "cpu")


class BatchScalePlate(pyro.plate):
    """``pyro.plate`` over N rows that visits a subsample without scaling log-densities by N / batch.

    The plate keeps what a subsampled plate gives a guide (the full size N for
    per-example parameters, the batch's positions); only the scale is left as the
    enclosing handlers set it.
    """

    def _process_message(self, msg) -> None:
        scale = msg["scale"]
        super()._process_message(msg)
        msg["scale"] = scale


def data_plate(x: Optional[torch.Tensor], num_examples: Optional[int], subsample: Optional[torch.Tensor],
               device: torch.device, scale_to_full_data: bool = True) -> pyro.plate:
    """The plate ``"data"`` of the model and its guides: full size N, this batch's size and positions.

    The batch size comes from ``x``, else ``subsample``, else ``num_examples``;
    the full size is ``num_examples``, defaulting to the batch size. With
    ``scale_to_full_data=False`` the batch is not scaled by N / batch (:class:`BatchScalePlate`).
    """
    if x is not None:
        batch_size = x.shape[0]
    elif subsample is not None:
        batch_size = subsample.shape[0]
    elif num_examples is not None:
        batch_size = num_examples
    else:
        raise ZooError("vae(x=None) needs num_examples (how many images to draw) or subsample.")
    plate = pyro.plate if scale_to_full_data else BatchScalePlate
    return plate("data", num_examples or batch_size, subsample_size=batch_size, subsample=subsample,
                 dim=-1, device=device)


def create_data_plate(x: Optional[torch.Tensor], *, num_examples: Optional[int] = None,
                      subsample: Optional[torch.Tensor] = None, scale_to_full_data: bool = True,
                      **model_options) -> pyro.plate:
    """``create_plates`` for Pyro's auto guides on :func:`vae`: the model's plate, same batch positions and scale.

    Without it an ``AutoNormal`` would draw its own random positions for the batch
    and fit the wrong rows of its per-example parameters. Takes the model's
    arguments (``decoder``, ``latent_dim`` are ignored), e.g.
    ``AutoNormal(model, create_plates=create_data_plate)``.
    """
    device = x.device if x is not None else (subsample.device if subsample is not None else None)
    return data_plate(x, num_examples, subsample, device, scale_to_full_data)
