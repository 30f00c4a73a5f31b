"""The Gaussian mixture model and its mean-field guide: exact log joints, shapes, sites, errors."""

import functools
import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import Predictive, Trace_ELBO, TraceEnum_ELBO
from pyro.infer.autoguide import AutoNormal
from scipy import stats

from pyro_vi_zoo.errors import DataError, ZooError
from pyro_vi_zoo.guides.gmm import gmm_mean_field, initial_values, kmeans_plus_plus_seeds
from pyro_vi_zoo.models.gmm import (
    GLOBAL_SITES,
    MAX_PLATE_NESTING,
    MixturePriors,
    OrderedFirstColumnTransform,
    OrderedNormal,
    assignment_log_probabilities,
    gmm,
    infer_assignments,
    mixture_log_likelihood,
)


def make_data(num_points=60, dim=2, seed=0, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[0.0] * dim, [2.0] * dim], dtype=dtype)
    labels = torch.arange(num_points) % 2
    return centres[labels] + 0.3 * torch.randn(num_points, dim, generator=generator, dtype=dtype)


def fixed_values(num_components, dim, ordered, dtype=torch.float32):
    """Global parameter values that lie in every prior's support (ordered first column)."""
    generator = torch.Generator().manual_seed(1)
    weights = torch.rand(num_components, generator=generator, dtype=dtype) + 0.5
    locs = torch.randn(num_components, dim, generator=generator, dtype=dtype)
    locs[:, 0] = torch.arange(num_components, dtype=dtype) * 1.5 - 1.0
    scales = torch.rand(num_components, dim, generator=generator, dtype=dtype) + 0.2
    return {"weights": weights / weights.sum(), "locs": locs, "scales": scales}


def delta_guide(values, ordered):
    """A guide that puts all its mass on ``values``: log q = 0, so the ELBO is the log joint."""

    def guide(data, **kwargs):
        pyro.sample("weights", dist.Delta(values["weights"], event_dim=1))
        with pyro.plate("components", len(values["weights"]), dim=-1):
            pyro.sample("scales", dist.Delta(values["scales"], event_dim=1))
            if not ordered:
                pyro.sample("locs", dist.Delta(values["locs"], event_dim=1))
        if ordered:
            pyro.sample("locs", dist.Delta(values["locs"], event_dim=2))

    return guide


def scipy_log_joint(data, values, priors, ordered):
    """The log joint density written independently with scipy, for the default LogNormal scale prior."""
    data = data.double().numpy()
    weights, locs, scales = (values[name].double().numpy() for name in GLOBAL_SITES)
    num_components = len(weights)
    log_prior = stats.dirichlet.logpdf(weights / weights.sum(), np.full(num_components, priors.weight_concentration))
    log_prior += stats.norm.logpdf(locs, priors.loc_loc, priors.loc_scale).sum()
    log_prior += stats.lognorm.logpdf(scales, s=priors.scale_scale, scale=np.exp(priors.scale_loc)).sum()
    if ordered:
        log_prior += math.lgamma(num_components + 1)
    component = stats.norm.logpdf(data[:, None, :], locs[None], scales[None]).sum(-1) + np.log(weights)
    return log_prior + np.logaddexp.reduce(component, axis=-1).sum()


@pytest.mark.parametrize("ordered", [False, True])
@pytest.mark.parametrize("num_components,dim", [(1, 1), (2, 2), (3, 2)])
def test_enumerated_and_marginalised_elbo_equal_the_log_joint(num_components, dim, ordered):
    data = make_data(dim=dim)
    values = fixed_values(num_components, dim, ordered)
    priors = MixturePriors(weight_concentration=2.0, loc_scale=3.0, scale_loc=-0.5, scale_scale=1.5)
    kwargs = dict(num_components=num_components, ordered=ordered, priors=priors)
    guide = delta_guide(values, ordered)
    enumerated = TraceEnum_ELBO(max_plate_nesting=MAX_PLATE_NESTING).loss(
        functools.partial(gmm, assignments="enumerated", **kwargs), guide, data
    )
    marginalised = Trace_ELBO(max_plate_nesting=MAX_PLATE_NESTING).loss(
        functools.partial(gmm, assignments="marginalised", **kwargs), guide, data
    )
    expected = -scipy_log_joint(data, values, priors, ordered)
    assert enumerated == pytest.approx(marginalised, rel=1e-5, abs=1e-3)
    assert marginalised == pytest.approx(expected, rel=1e-5, abs=1e-3)


@pytest.mark.parametrize("assignments,elbo_class", [("marginalised", Trace_ELBO), ("enumerated", TraceEnum_ELBO)])
def test_vectorised_particles_give_the_same_deterministic_elbo(assignments, elbo_class):
    data = make_data()
    values = fixed_values(2, 2, ordered=False)
    model = functools.partial(gmm, assignments=assignments)
    single = elbo_class(max_plate_nesting=1).loss(model, delta_guide(values, False), data)
    vectorised = elbo_class(num_particles=5, vectorize_particles=True, max_plate_nesting=1).loss(
        model, delta_guide(values, False), data
    )
    assert vectorised == pytest.approx(single, rel=1e-5)


def latent_sites(trace):
    return {
        name: tuple(site["value"].shape)
        for name, site in trace.nodes.items()
        if site["type"] == "sample" and not site["is_observed"] and not name.startswith("_") and name != "assignment"
        and name not in ("data", "components")
    }


@pytest.mark.parametrize("ordered", [False, True])
@pytest.mark.parametrize("assignments", ["marginalised", "enumerated"])
def test_guide_sites_and_shapes_match_the_model(assignments, ordered):
    data = make_data(dim=3)
    kwargs = dict(num_components=3, assignments=assignments, ordered=ordered)
    with pyro.get_param_store().scope():
        guide_trace = poutine.trace(gmm_mean_field).get_trace(data, **kwargs)
    model_trace = poutine.trace(poutine.replay(gmm, trace=guide_trace)).get_trace(data, **kwargs)
    assert latent_sites(guide_trace) == latent_sites(model_trace) == {"weights": (3,), "locs": (3, 3), "scales": (3, 3)}
    if ordered:
        first_column = guide_trace.nodes["locs"]["value"][:, 0]
        assert (first_column[1:] > first_column[:-1]).all()


def test_model_and_guide_make_tensors_in_the_dtype_of_the_data():
    data = make_data(dtype=torch.float64)
    with pyro.get_param_store().scope():
        guide_trace = poutine.trace(gmm_mean_field).get_trace(data, ordered=True)
        assert all(pyro.param(name).dtype == torch.float64 for name in pyro.get_param_store().keys())
    model_trace = poutine.trace(poutine.replay(gmm, trace=guide_trace)).get_trace(data, ordered=True)
    model_trace.compute_log_prob()
    for name in GLOBAL_SITES + ("obs",):
        assert model_trace.nodes[name]["log_prob"].dtype == torch.float64


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("assignments,elbo_class", [("marginalised", Trace_ELBO), ("enumerated", TraceEnum_ELBO)])
def test_model_and_guide_run_on_the_device_of_the_data(assignments, elbo_class):
    data = make_data().cuda()
    model = functools.partial(gmm, assignments=assignments, ordered=True, subsample_size=20)
    guide = functools.partial(gmm_mean_field, assignments=assignments, ordered=True, subsample_size=20)
    with pyro.get_param_store().scope():
        loss = elbo_class(num_particles=3, vectorize_particles=True, max_plate_nesting=1).differentiable_loss(model, guide, data)
        assert loss.device == data.device
        assert all(pyro.param(name).device == data.device for name in pyro.get_param_store().keys())


@pytest.mark.parametrize("ordered", [False, True])
@pytest.mark.parametrize("assignments", ["marginalised", "enumerated"])
def test_predictive_parallel_works_with_hand_written_and_auto_guides(assignments, ordered):
    data = make_data()
    model = functools.partial(gmm, assignments=assignments, ordered=ordered)
    with pyro.get_param_store().scope():
        guides = [functools.partial(gmm_mean_field, assignments=assignments, ordered=ordered),
                  AutoNormal(poutine.block(model, hide=["assignment"]))]
        for guide in guides:
            samples = Predictive(model, guide=guide, num_samples=4, parallel=True)(data)
            assert samples["weights"].shape == (4, 1, 2)
            assert samples["scales"].shape == (4, 2, 2)
            assert samples["locs"].shape == ((4, 1, 2, 2) if ordered else (4, 2, 2))
            assert torch.allclose(samples["weights"].sum(-1), torch.ones(()))


def test_subsampled_elbo_is_unbiased_for_the_full_one():
    data = make_data(num_points=40)
    values = fixed_values(2, 2, ordered=False)
    guide = delta_guide(values, False)
    full = Trace_ELBO().loss(gmm, guide, data)
    pyro.set_rng_seed(3)
    subsampled = np.mean([Trace_ELBO().loss(functools.partial(gmm, subsample_size=10), guide, data) for _ in range(400)])
    assert subsampled == pytest.approx(full, rel=0.01)


def test_map_assignments_from_infer_discrete_agree_with_the_responsibilities():
    data = make_data(num_points=200)
    values = fixed_values(2, 2, ordered=True)
    values["locs"] = torch.tensor([[0.0, 0.0], [2.0, 2.0]])
    probabilities = assignment_log_probabilities(data, *(values[name] for name in GLOBAL_SITES)).exp()
    map_assignment = infer_assignments(data, values, temperature=0, ordered=True)
    assert torch.equal(map_assignment, probabilities.argmax(-1))
    assert torch.equal(map_assignment, torch.arange(200) % 2)
    pyro.set_rng_seed(0)
    sampled = torch.stack([infer_assignments(data, values, temperature=1) for _ in range(200)]).double()
    assert torch.allclose(sampled.mean(0), probabilities[:, 1].double(), atol=0.12)


def test_mixture_log_likelihood_batches_over_parameter_draws():
    data = make_data(num_points=7)
    values = fixed_values(2, 2, ordered=False)
    single = mixture_log_likelihood(data, *(values[name] for name in GLOBAL_SITES))
    batched = mixture_log_likelihood(data, *(values[name].expand(3, *values[name].shape) for name in GLOBAL_SITES))
    assert single.shape == (7,) and batched.shape == (3, 7)
    assert torch.allclose(batched, single.expand(3, 7))


def test_ordered_transform_round_trips_and_its_log_determinant_matches_autograd():
    transform = OrderedFirstColumnTransform()
    x = torch.randn(3, 2, dtype=torch.float64)
    y = transform(x)
    assert (y[1:, 0] > y[:-1, 0]).all() and torch.equal(y[:, 1], x[:, 1])
    assert torch.allclose(transform.inv(y), x)
    jacobian = torch.autograd.functional.jacobian(lambda v: transform(v.view(3, 2)).flatten(), x.flatten())
    assert transform.log_abs_det_jacobian(x, y).item() == pytest.approx(torch.linalg.slogdet(jacobian)[1].item())


def test_ordered_normal_is_a_normalised_density_on_ordered_rows():
    zero, one = torch.zeros(1, dtype=torch.float64), torch.ones(1, dtype=torch.float64)
    prior = OrderedNormal(zero, one, num_rows=2, validate_args=False)
    grid = torch.linspace(-6, 6, 601, dtype=torch.float64)
    first, second = torch.meshgrid(grid, grid, indexing="ij")
    density = prior.log_prob(torch.stack([first, second], -1).unsqueeze(-1)).exp() * (second > first)
    assert density.sum().item() * (grid[1] - grid[0]).item() ** 2 == pytest.approx(1.0, abs=0.01)
    draws = OrderedNormal(zero, one, num_rows=2).sample((500,))
    assert draws.shape == (500, 2, 1) and (draws[:, 1, 0] > draws[:, 0, 0]).all()
    assert draws[:, 0, 0].mean().item() == pytest.approx(-1 / math.sqrt(math.pi), abs=0.1)


def test_kmeans_plus_plus_seeds_spread_over_separated_clusters():
    torch.manual_seed(0)
    data = make_data(num_points=200)
    hits = [set((kmeans_plus_plus_seeds(data, 2)[:, 0] > 1.0).tolist()) for _ in range(50)]
    assert sum(hit == {True, False} for hit in hits) >= 45
    start = initial_values(data, 3, ordered=True)
    assert start["locs"].shape == (3, 2) and (start["locs"][1:, 0] >= start["locs"][:-1, 0]).all()


def test_mean_field_guide_recovers_well_separated_components():
    torch.manual_seed(0)
    data = make_data(num_points=400)
    with pyro.get_param_store().scope():
        guide = functools.partial(gmm_mean_field, ordered=True)
        svi = pyro.infer.SVI(functools.partial(gmm, ordered=True), guide, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())
        for _ in range(300):
            svi.step(data)
        locs = OrderedFirstColumnTransform()(pyro.param("gmm.locs_loc")).detach()
        weights = pyro.param("gmm.weights_concentration").detach()
    assert torch.allclose(locs, torch.tensor([[0.0, 0.0], [2.0, 2.0]]), atol=0.1)
    assert torch.allclose(weights / weights.sum(), torch.tensor([0.5, 0.5]), atol=0.05)


@pytest.mark.parametrize(
    "kwargs,error,words",
    [
        (dict(num_components=0), ZooError, "num_components must be an integer >= 1"),
        (dict(num_components=1.5), ZooError, "num_components must be an integer >= 1"),
        (dict(assignments="sampled"), ZooError, "assignments must be one of"),
        (dict(priors=MixturePriors(scale_prior="gamma")), ZooError, "scale_prior must be one of"),
    ],
)
def test_bad_options_raise_errors_that_name_the_fix(kwargs, error, words):
    with pytest.raises(error, match=words):
        gmm(make_data(), **kwargs)
    with pytest.raises(error, match=words):
        gmm_mean_field(make_data(), **kwargs)


def test_one_dimensional_data_raises_a_data_error_that_says_reshape():
    with pytest.raises(DataError, match=r"2-D array \(n, d\).*reshape"):
        gmm(torch.randn(10))
    with pytest.raises(DataError, match="float tensor"):
        gmm(np.zeros((10, 2)))


@pytest.mark.parametrize("assignments", ["marginalised", "enumerated"])
def test_parallel_predictive_takes_mcmc_shaped_draws(assignments, device):
    """MCMC hands ``Predictive`` the weights as ``(S, K)``, with no slot for the data plate. Each of three draws
    puts nearly all weight on one component with a location of its own and a tiny scale, so each draw's
    predictions sit at that location: they do in parallel as they do one draw at a time. (``data`` gives the
    number of points; ``poutine.uncondition`` draws new ones.)"""
    data = torch.randn(40, 2, device=device)
    chosen = torch.tensor([0, 1, 0], device=device)
    locs = torch.tensor([[[-5.0, 0.0], [5.0, 1.0]], [[0.0, 0.0], [3.0, -3.0]], [[7.0, 7.0], [0.0, 0.0]]], device=device)
    draws = {
        "weights": torch.nn.functional.one_hot(chosen, 2).to(data.dtype).clamp(1e-6, 1.0),
        "locs": locs,
        "scales": torch.full((3, 2, 2), 1e-3, device=device),
    }
    model = poutine.uncondition(functools.partial(gmm, assignments=assignments))  # draw new points, as predictions
    expected = locs[torch.arange(3), chosen]  # (3, 2): each draw's chosen location
    for parallel in (False, True):
        pyro.set_rng_seed(0)
        predicted = Predictive(model, posterior_samples=draws, parallel=parallel, return_sites=["obs"])(data)["obs"]
        assert predicted.shape == (3, 40, 2)
        assert torch.allclose(predicted.median(1).values, expected, atol=0.01), (parallel, predicted.median(1).values)
