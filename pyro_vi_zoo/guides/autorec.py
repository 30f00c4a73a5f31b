"""Hand-written guides for :mod:`pyro_vi_zoo.models.autorec`.

:class:`AutoRecMeanField` is Bayes by Backprop (Blundell et al. 2015, "Weight
Uncertainty in Neural Networks") for AutoRec: an independent Normal
``Normal(loc, softplus(raw))`` per weight and bias, and a LogNormal for a
learned noise scale ``sigma``.

The structured, cheaper option ``point_sites=ENCODER_SITES``
(:func:`autorec_last_layer_guide`) is a "Bayesian last layer" (Snoek et al.
2015, "Scalable Bayesian Optimization Using Deep Neural Networks"; Kristiadi et
al. 2020, "Being Bayesian, Even Just a Bit, Fixes Overconfidence in ReLU Networks"):
point masses (MAP) on the encoder ``V``, ``mu`` and mean-field Normals on the
decoder ``W``, ``b``. It drops the encoder's scale parameters (a quarter of the
mean-field guide's) and the encoder's sampling noise from the gradients, while the
predictive spread over ratings, which the decoder carries, stays. Its ELBO is the
MAP objective in the encoder plus the mean-field ELBO in the decoder (a point mass
contributes its log prior density and no entropy).

Initialisation, and why (as in :mod:`pyro_vi_zoo.guides.bnn_regression`):

- locations as :class:`torch.nn.Linear` initialises a layer (``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``),
  so the sigmoid units start unsaturated; ``init_output_bias`` (the mean training
  rating, say) lets the decoder bias start at the data's level instead of 0;
- scales start at ``init_scale`` (default 0.01): small against the location spread,
  so early gradients are not drowned in sampling noise, yet large enough for Adam
  to grow them to posterior size;
- ``sigma`` starts at ``init_noise_scale`` (1 rating unit by default) with log-scale ``init_scale``.

:func:`autorec_init_loc_fn` gives auto guides (AutoDelta, AutoNormal, ...) the same
starting point; their default, a draw from the prior, saturates the sigmoid units.
"""

import math
from typing import Callable, Dict, Optional, Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.infer.autoguide.initialization import init_to_median
from pyro.nn import PyroModule, PyroParam

from ..models.autorec import BayesianAutoRec

__all__ = [
    "AutoRecMeanField",
    "DEFAULT_INIT_SCALE",
    "ENCODER_SITES",
    "autorec_init_loc_fn",
    "autorec_last_layer_guide",
    "autorec_mean_field",
]

DEFAULT_INIT_SCALE = 0.01
ENCODER_SITES = ("encoder.weight", "encoder.bias")


def linear_layer_init(model: BayesianAutoRec, name: str, output_bias: Optional[float] = None) -> torch.Tensor:
    """A starting value for weight site ``name`` as :class:`torch.nn.Linear` would draw it, on the model's device
    and in its dtype.

    ``output_bias`` (a float) replaces the draw for ``decoder.bias``.
    """
    shape, fan_in = model.site_shapes()[name]
    if name == "decoder.bias" and output_bias is not None:
        return torch.full(shape, float(output_bias), device=model.device, dtype=model.dtype)
    bound = 1.0 / math.sqrt(fan_in)
    return torch.empty(shape, device=model.device, dtype=model.dtype).uniform_(-bound, bound)


def autorec_init_loc_fn(model: BayesianAutoRec, output_bias: Optional[float] = None,
                        noise_scale: float = 1.0) -> Callable[[dict], torch.Tensor]:
    """An ``init_loc_fn`` for Pyro's auto guides: :func:`linear_layer_init` for weights, ``noise_scale`` for sigma."""
    shapes = model.site_shapes()

    def init_loc(site: dict) -> torch.Tensor:
        if site["name"] in shapes:
            return linear_layer_init(model, site["name"], output_bias)
        if site["name"] == "sigma":
            return torch.tensor(float(noise_scale), device=model.device, dtype=model.dtype)
        return init_to_median(site)

    return init_loc


class AutoRecMeanField(PyroModule):
    """Mean-field guide for :class:`~pyro_vi_zoo.models.autorec.BayesianAutoRec`, with the model's signature.

    Args:
        model: the model whose sites this guide covers (sizes, device, whether ``sigma`` is learned).
        init_scale: starting standard deviation of every Normal (and of log sigma).
        point_sites: weight sites given a point mass (MAP) instead of a Normal; ``ENCODER_SITES``
            makes the Bayesian-last-layer guide.
        init_output_bias: starting value of the decoder bias (e.g. the mean training rating); ``None``
            draws it like the other locations.
        init_noise_scale: starting median of the LogNormal over a learned ``sigma``.

    Parameters (PyroParams, made on the model's device and in its dtype when the guide is built):
    ``autorec.<site>_loc`` and ``autorec.<site>_scale`` (softplus-positive) with the site's dots replaced by
    underscores, e.g. ``autorec.encoder_weight_loc``; ``autorec.sigma_loc``/``sigma_scale`` for the noise.
    Calling it returns the sampled values by site name.
    """

    def __init__(self, model: BayesianAutoRec, init_scale: float = DEFAULT_INIT_SCALE,
                 point_sites: Sequence[str] = (), init_output_bias: Optional[float] = None,
                 init_noise_scale: float = 1.0):
        super().__init__(name="autorec")  # its parameters are autorec.<name> in Pyro's global param store
        shapes = model.site_shapes()
        unknown = set(point_sites) - set(shapes)
        if unknown:
            raise ValueError(f"point_sites {sorted(unknown)} are not weight sites of the model; "
                             f"choose from {list(shapes)}")
        self.event_dims = {name: len(shape) for name, (shape, _) in shapes.items()}
        self.point_sites = tuple(point_sites)
        self.learns_noise = model.learns_noise
        for name in shapes:
            setattr(self, _attribute(name, "loc"), PyroParam(linear_layer_init(model, name, init_output_bias)))
            if name not in self.point_sites:
                scale = torch.full(shapes[name][0], float(init_scale), device=model.device, dtype=model.dtype)
                setattr(self, _attribute(name, "scale"), PyroParam(scale, constraint=constraints.softplus_positive))
        if self.learns_noise:
            self.sigma_loc = PyroParam(torch.tensor(math.log(init_noise_scale), device=model.device, dtype=model.dtype))
            self.sigma_scale = PyroParam(torch.tensor(float(init_scale), device=model.device, dtype=model.dtype),
                                         constraint=constraints.softplus_positive)

    def forward(self, inputs: torch.Tensor, targets: Optional[torch.Tensor] = None, mask: Optional[torch.Tensor] = None,
                *, num_rows: Optional[int] = None, subsample: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        values = {name: pyro.sample(name, self.posterior(name)) for name in self.event_dims}
        if self.learns_noise:
            values["sigma"] = pyro.sample("sigma", dist.LogNormal(self.sigma_loc, self.sigma_scale))
        return values

    def posterior(self, name: str) -> dist.Distribution:
        """The guide's distribution over weight site ``name``: a Normal per entry, or a point mass."""
        loc = getattr(self, _attribute(name, "loc"))
        if name in self.point_sites:
            return dist.Delta(loc, event_dim=self.event_dims[name])
        return dist.Normal(loc, getattr(self, _attribute(name, "scale"))).to_event(self.event_dims[name])

    def median(self) -> Dict[str, torch.Tensor]:
        """The posterior median of every weight site (and ``sigma``), for point predictions with ``predict_mean``."""
        values = {name: getattr(self, _attribute(name, "loc")).detach() for name in self.event_dims}
        if self.learns_noise:
            values["sigma"] = self.sigma_loc.detach().exp()
        return values


def autorec_mean_field(model: BayesianAutoRec, **options) -> AutoRecMeanField:
    """The mean-field guide for ``model`` (keywords as :class:`AutoRecMeanField`)."""
    return AutoRecMeanField(model, **options)


def autorec_last_layer_guide(model: BayesianAutoRec, **options) -> AutoRecMeanField:
    """The Bayesian-last-layer guide: point masses on the encoder, mean-field Normals on the decoder (and sigma)."""
    return AutoRecMeanField(model, point_sites=ENCODER_SITES, **options)


def _attribute(site: str, kind: str) -> str:
    return f"{site.replace('.', '_')}_{kind}"
