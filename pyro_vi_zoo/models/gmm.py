"""Gaussian mixture model: K components in D dimensions, diagonal covariances.

    weights ~ Dirichlet(c, ..., c)                       (K,)
    locs[k, d] ~ Normal(m, s)                            (K, D)   optionally ordered, see below
    scales[k, d] ~ LogNormal(a, b)  or  HalfNormal(b)    (K, D)
    assignment[n] ~ Categorical(weights)                 enumerated, or summed out analytically
    data[n] ~ Normal(locs[assignment[n]], scales[assignment[n]])   (independent over d)

The discrete assignments are handled in one of two ways (``assignments=``):

* ``"enumerated"``: the assignment is a sample site marked for parallel enumeration,
  and ``TraceEnum_ELBO`` sums it out exactly (Obermeyer et al. 2019, "Tensor
  variable elimination for plated factor graphs").
* ``"marginalised"``: the likelihood is the mixture itself, ``MixtureSameFamily``,
  and plain ``Trace_ELBO`` fits it; no discrete site exists.

Both give the same log joint density of the global parameters (the tests check
this to numerical precision). Mixtures are not identifiable under relabelling of
the components; ``ordered=True`` restricts the locations to rows ordered along the
first dimension (the prior becomes the order statistics of the i.i.d. Normal prior,
Stan's ``ordered`` type), which removes the label switching when the components
differ in that dimension.

Plates: the data plate and the components plate, both at dim -1 and never nested,
so ``max_plate_nesting = 1``. The weights are one Dirichlet event; locations and
scales are sampled per component in the components plate (event: the D
dimensions), except ordered locations, which are one (K, D) event. Inside the
model they are used in one shape, (..., 1, K, D), left of the data plate's dim.
Vectorised ELBO particles and ``Predictive(parallel=True)`` add their plate at
dim -2, enumeration uses the dims left of that. (Sampling locations and scales in
a plate also keeps ``Predictive(parallel=True)`` right: it infers the sample
shapes of global event-shaped sites from the guide's plates; the weights get the
data plate's slot inside the model, so posterior draws without a guide, MCMC's,
work too.)

References: Bishop (2006), Pattern Recognition and Machine Learning, ch. 9-10;
Blei, Kucukelbir & McAuliffe (2017), "Variational inference: a review for
statisticians", JASA 112 (the Gaussian mixture as the running example).
"""

import math
from dataclasses import dataclass
from typing import Dict, Sequence, Union

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.distributions import constraints
from pyro.distributions.torch_distribution import TorchDistribution
from pyro.infer import infer_discrete
from pyro.ops.indexing import Vindex
from torch.distributions import biject_to, transform_to
from torch.distributions.transforms import Transform

from ..errors import DataError, ZooError
from .distributions import HalfNormal, constant
from .plates import minibatch_plate

ASSIGNMENT_MODES = ("marginalised", "enumerated")
SCALE_PRIORS = ("lognormal", "halfnormal")
GLOBAL_SITES = ("weights", "locs", "scales")
MAX_PLATE_NESTING = 1

Number = Union[float, Sequence[float]]


@dataclass(frozen=True)
class MixturePriors:
    """Hyperparameters of the priors; a number or one value per dimension (per component for weights),
    as Python numbers or tensors. A number is filled in on the data's device; a list is copied from the host
    at every step, which a recorded CUDA graph cannot do: give per-dimension values as tensors on that device.

    ``scale_prior="lognormal"`` gives scales ~ LogNormal(scale_loc, scale_scale);
    ``"halfnormal"`` gives scales ~ HalfNormal(scale_scale) (posteriordb's
    low_dim_gauss_mix uses HalfNormal(2), Normal(0, 2) locations, Beta(5, 5) weight).
    """

    weight_concentration: Number = 1.0
    loc_loc: Number = 0.0
    loc_scale: Number = 10.0
    scale_prior: str = "lognormal"
    scale_loc: Number = 0.0
    scale_scale: Number = 2.0


def gmm(data, *, num_components=2, assignments="marginalised", ordered=False, priors=None, subsample_size=None,
        subsample=None):
    """The Gaussian mixture model of this module's docstring.

    Args:
        data: observed points, a float tensor of shape (n, d); every tensor the model
            makes lives on its device and has its dtype.
        num_components: K >= 1.
        assignments: ``"marginalised"`` (MixtureSameFamily, fit with Trace_ELBO) or
            ``"enumerated"`` (site ``assignment`` enumerated, fit with TraceEnum_ELBO; Pyro's auto
            guides take the global sites only: ``AutoNormal(poutine.block(model, hide=["assignment"]))``).
        ordered: order the component locations along the first dimension.
        priors: a :class:`MixturePriors`; ``None`` means the defaults.
        subsample_size: minibatch size of the data plate, ``None`` for all points.
        subsample: the minibatch's indices chosen outside (replaces ``subsample_size``).

    Returns the global parameters ``(weights, locs, scales)``.
    """
    check_model_arguments(data, num_components, assignments, priors)
    priors = priors or MixturePriors()
    num_data, dim = data.shape
    weights = pyro.sample("weights", weight_prior(data, num_components, priors))
    with pyro.plate("components", num_components, dim=-1, device=data.device):
        scales = pyro.sample("scales", scale_prior(data, priors)).unsqueeze(-3)
        if not ordered:
            locs = pyro.sample("locs", location_prior(data, priors)).unsqueeze(-3)
    if ordered:
        locs = pyro.sample("locs", ordered_location_prior(data, num_components, priors))
    mixing = with_data_slot(weights)
    with minibatch_plate(num_data, subsample_size, subsample, data.device) as index:
        batch = data if subsample_size is None and subsample is None else data.index_select(0, index)
        if assignments == "enumerated":
            assignment = pyro.sample("assignment", dist.Categorical(mixing), infer={"enumerate": "parallel"})
            component = dist.Normal(Vindex(locs)[..., assignment, :], Vindex(scales)[..., assignment, :])
            pyro.sample("obs", component.to_event(1), obs=batch)
        else:
            pyro.sample("obs", mixture_likelihood(mixing, locs, scales), obs=batch)
    return weights, locs, scales


def with_data_slot(weights: torch.Tensor) -> torch.Tensor:
    """Mixture weights ``(..., K)`` with the data plate's slot, ``(..., 1, K)``, so that their sample dims sit
    left of the data dim. Vectorised particles and a guide's draws already have it; posterior draws handed
    to ``Predictive(parallel=True)`` (MCMC's ``(S, K)``) do not: Pyro pads a site by its event shape's
    length only."""
    return weights.unsqueeze(-2) if weights.dim() > 1 and weights.shape[-2] != 1 else weights


def check_model_arguments(data, num_components, assignments, priors=None):
    """Raise a :class:`ZooError` that names the fix for arguments the model cannot use.

    Only shapes and options are checked here (no host synchronisation per step);
    the data loaders check that values are finite.
    """
    if not isinstance(num_components, int) or isinstance(num_components, bool) or num_components < 1:
        raise ZooError(f"num_components must be an integer >= 1, got {num_components!r}; pass --components K with K >= 1.")
    if assignments not in ASSIGNMENT_MODES:
        raise ZooError(f"assignments must be one of {ASSIGNMENT_MODES}, got {assignments!r}.")
    if priors is not None and priors.scale_prior not in SCALE_PRIORS:
        raise ZooError(f"scale_prior must be one of {SCALE_PRIORS}, got {priors.scale_prior!r}.")
    if not isinstance(data, torch.Tensor) or not data.is_floating_point():
        raise DataError(
            f"data must be a float tensor of shape (n, d), got {type(data).__name__}; "
            "load it with pyro_vi_zoo.data.mixture."
        )
    if data.dim() != 2:
        raise DataError(
            f"data must be a 2-D array (n, d), got shape {tuple(data.shape)}; reshape 1-D values with x.reshape(-1, 1)."
        )


def weight_prior(data, num_components, priors):
    """Dirichlet prior of the mixture weights, shape (K,)."""
    concentration = constant(data, priors.weight_concentration).expand(num_components)
    return dist.Dirichlet(concentration)


def location_prior(data, priors):
    """Normal prior of one component's location, event shape (D,) (used in the components plate)."""
    dim = data.shape[-1]
    loc = constant(data, priors.loc_loc).expand(dim)
    return dist.Normal(loc, constant(data, priors.loc_scale).expand(dim)).to_event(1)


def ordered_location_prior(data, num_components, priors):
    """:class:`OrderedNormal` prior of all (K, D) locations, rows ordered by the first dimension."""
    dim = data.shape[-1]
    loc = constant(data, priors.loc_loc).expand(dim)
    return OrderedNormal(loc, constant(data, priors.loc_scale).expand(dim), num_components)


def scale_prior(data, priors):
    """LogNormal or HalfNormal prior of one component's scales, event shape (D,)."""
    dim = data.shape[-1]
    scale = constant(data, priors.scale_scale).expand(dim)
    if priors.scale_prior == "halfnormal":
        return HalfNormal(scale).to_event(1)
    return dist.LogNormal(constant(data, priors.scale_loc).expand(dim), scale).to_event(1)


def mixture_likelihood(weights, locs, scales):
    """``MixtureSameFamily`` of diagonal Normals: weights (..., K), locs and scales (..., K, D)."""
    components = dist.Normal(locs, scales).to_event(1)
    return dist.MixtureSameFamily(dist.Categorical(weights), components)


def mixture_log_likelihood(data, weights, locs, scales):
    """Pointwise log p(data[n] | weights, locs, scales), shape (..., n) for parameters with batch shape (...)."""
    batched = mixture_likelihood(weights.unsqueeze(-2), locs.unsqueeze(-3), scales.unsqueeze(-3))
    return batched.log_prob(data)


def assignment_log_probabilities(data, weights, locs, scales):
    """log p(assignment[n] = k | data[n], parameters), shape (..., n, K) (the responsibilities, Bishop 2006 eq. 9.23)."""
    component_log_density = dist.Normal(locs.unsqueeze(-3), scales.unsqueeze(-3)).log_prob(data.unsqueeze(-2)).sum(-1)
    joint = weights.log().unsqueeze(-2) + component_log_density
    return joint - joint.logsumexp(-1, keepdim=True)


def infer_assignments(data, global_values: Dict[str, torch.Tensor], *, temperature=0, **model_kwargs):
    """MAP (``temperature=0``) or sampled (``temperature=1``) assignments given global parameter values.

    Runs Pyro's ``infer_discrete`` (forward-filter backward-sample/max, Obermeyer et
    al. 2019) on the enumerated model conditioned on ``global_values`` (a dict with
    ``weights``, ``locs``, ``scales``, e.g. posterior means or one posterior draw),
    whichever assignment mode the fit used. Returns a long tensor of shape (n,).
    """
    model_kwargs = dict(model_kwargs, assignments="enumerated", subsample_size=None)
    conditioned = poutine.condition(gmm, data={name: global_values[name] for name in GLOBAL_SITES})
    decoder = infer_discrete(conditioned, first_available_dim=-MAX_PLATE_NESTING - 1, temperature=temperature)
    trace = poutine.trace(decoder).get_trace(data, **model_kwargs)
    return trace.nodes["assignment"]["value"]


class _OrderedFirstColumn(constraints.Constraint):
    """(K, D) matrices whose first column is strictly increasing."""

    event_dim = 2

    def check(self, value):
        first = value[..., 0]
        increasing = (first[..., 1:] > first[..., :-1]).all(-1)
        return increasing & (value == value).flatten(-2).all(-1)


ordered_first_column = _OrderedFirstColumn()


class OrderedFirstColumnTransform(Transform):
    """Bijection from unconstrained (K, D) matrices to matrices with increasing first column.

    The first column is the cumulative sum of ``[x_0, exp(x_1), ..., exp(x_{K-1})]``
    (Stan's ordered transform); the other columns pass through unchanged.
    """

    domain = constraints.independent(constraints.real, 2)
    codomain = ordered_first_column
    bijective = True

    def __eq__(self, other):
        return isinstance(other, OrderedFirstColumnTransform)

    def _call(self, x):
        increments = torch.cat([x[..., :1, 0], x[..., 1:, 0].exp()], -1)
        return torch.cat([increments.cumsum(-1).unsqueeze(-1), x[..., 1:]], -1)

    def _inverse(self, y):
        first = y[..., 0]
        raw = torch.cat([first[..., :1], (first[..., 1:] - first[..., :-1]).log()], -1)
        return torch.cat([raw.unsqueeze(-1), y[..., 1:]], -1)

    def log_abs_det_jacobian(self, x, y):
        return x[..., 1:, 0].sum(-1)


@biject_to.register(_OrderedFirstColumn)
@transform_to.register(_OrderedFirstColumn)
def _transform_to_ordered_first_column(constraint):
    return OrderedFirstColumnTransform()


class OrderedNormal(TorchDistribution):
    """K i.i.d. rows ~ Normal(loc, scale) (independent over D), sorted by their first coordinate.

    The density is K! * prod_k Normal(row_k) on the ordered set: the order statistics of
    the rows, Stan's ``ordered[K] mu; mu ~ normal(m, s);`` up to the constant log K!.
    ``loc`` and ``scale`` have shape (..., D); the event shape is (K, D).
    """

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    support = ordered_first_column

    def __init__(self, loc, scale, num_rows, validate_args=None):
        self.loc, self.scale = torch.broadcast_tensors(loc, scale)
        self.num_rows = num_rows
        batch_shape = self.loc.shape[:-1]
        event_shape = torch.Size((num_rows, self.loc.shape[-1]))
        super().__init__(batch_shape, event_shape, validate_args=validate_args)

    def _rows(self):
        return dist.Normal(self.loc.unsqueeze(-2), self.scale.unsqueeze(-2))

    def sample(self, sample_shape=torch.Size()):
        shape = self._extended_shape(sample_shape)
        with torch.no_grad():
            rows = self._rows().expand(shape).sample()
            order = rows[..., 0].argsort(-1)
            return rows.gather(-2, order.unsqueeze(-1).expand(shape))

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        return self._rows().log_prob(value).sum((-2, -1)) + math.lgamma(self.num_rows + 1)
