"""Hand-written mean-field guide for the Gaussian mixture of :mod:`pyro_vi_zoo.models.gmm`.

    q(weights) = Dirichlet(concentration)
    q(locs)    = prod Normal(locs_loc, locs_scale)       (pushed through the ordered
                                                          transform when ``ordered=True``)
    q(scales)  = prod LogNormal(scales_loc, scales_scale)

The guide covers the global parameters only: the assignments are enumerated or
marginalised in the model, which is exact (Blei et al. 2017, sec. 3, mean-field VI
for mixtures, keeps a factor per assignment instead; summing them out is the
collapsed version). The Dirichlet starts at concentration n/K (the counts of a
balanced split), near where its posterior lies. Initial locations are k-means++ seeds drawn from the data
(Arthur & Vassilvitskii 2007), so several restarts start from different, mostly
well-spread points; :func:`initial_values` gives the same start to auto guides.
"""

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints

from ..models.gmm import OrderedFirstColumnTransform, check_model_arguments

#: the guide's parameters are named ``gmm.<name>``, apart from any other model's in one param store
PREFIX = "gmm"


def gmm_mean_field(data, *, num_components=2, assignments="marginalised", ordered=False, priors=None, subsample_size=None,
                   subsample=None):
    """Mean-field guide with the model's signature; site names ``weights``, ``locs``, ``scales``."""
    check_model_arguments(data, num_components, assignments, priors)
    start = _lazy_initial_values(data, num_components, ordered)
    concentration = pyro.param(
        f"{PREFIX}.weights_concentration",
        lambda: data.new_full((num_components,), max(1.0, data.shape[0] / num_components)),
        constraint=constraints.positive,
    )
    pyro.sample("weights", dist.Dirichlet(concentration))
    scales_loc = pyro.param(f"{PREFIX}.scales_loc", lambda: start()["scales"].log())
    scales_scale = pyro.param(
        f"{PREFIX}.scales_scale", lambda: data.new_full(start()["scales"].shape, 0.05), constraint=constraints.positive
    )
    with pyro.plate("components", num_components, dim=-1, device=data.device):
        pyro.sample("scales", dist.LogNormal(scales_loc, scales_scale).to_event(1))
        if not ordered:
            pyro.sample("locs", location_guide(start, data, ordered).to_event(1))
    if ordered:
        pyro.sample("locs", location_guide(start, data, ordered))


def location_guide(start, data, ordered):
    """Independent Normals over the (K, D) locations (no event dims), or, when ``ordered``,
    Normals in the unconstrained space of the ordered transform (one (K, D) event)."""
    transform = OrderedFirstColumnTransform() if ordered else None
    initial = (lambda: transform.inv(start()["locs"])) if ordered else (lambda: start()["locs"])
    locs_loc = pyro.param(f"{PREFIX}.locs_loc", initial)
    locs_scale = pyro.param(
        f"{PREFIX}.locs_scale", lambda: (0.1 * start()["scales"]).expand_as(locs_loc).clone(), constraint=constraints.positive
    )
    base = dist.Normal(locs_loc, locs_scale)
    return base if transform is None else dist.TransformedDistribution(base.to_event(2), transform)


def _lazy_initial_values(data, num_components, ordered):
    """A callable computing :func:`initial_values` once, only if some parameter is new."""
    cache = {}

    def start():
        if not cache:
            cache.update(initial_values(data, num_components, ordered))
        return cache

    return start


def initial_values(data, num_components, ordered=False):
    """Starting values of the global sites from the data (uses torch's random state).

    Locations: k-means++ seeds; weights: uniform; scales: half the data's standard
    deviation per dimension. Returns a dict usable with ``init_to_value``.
    """
    locs = kmeans_plus_plus_seeds(data, num_components)
    if ordered:
        locs = locs[locs[:, 0].argsort()]
    spread = data.std(0) if data.shape[0] > 1 else data.new_ones(data.shape[1])
    scales = (0.5 * spread.clamp(min=1e-3)).expand(num_components, -1).clone()
    weights = data.new_full((num_components,), 1.0 / num_components)
    return {"weights": weights, "locs": locs, "scales": scales}


def kmeans_plus_plus_seeds(data, num_components):
    """K rows of ``data``: the first uniformly, each next with probability proportional to
    its squared distance to the nearest row chosen so far (Arthur & Vassilvitskii 2007)."""
    chosen = data[torch.randint(data.shape[0], (1,), device=data.device)]
    for _ in range(num_components - 1):
        distance = torch.cdist(data, chosen).min(-1).values.square()
        weights = distance + 1e-12 * distance.new_ones(()).expand_as(distance)
        chosen = torch.cat([chosen, data[torch.multinomial(weights, 1)]])
    return chosen
