"""The Bayesian MLP model, its mean-field guide and the maximum-likelihood network, on small tensors."""

import functools
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import Predictive, Trace_ELBO
from pyro.infer.autoguide import AutoDelta, AutoLowRankMultivariateNormal, AutoNormal

from pyro_vi_zoo.guides.bnn_regression import bnn_regression_guide
from pyro_vi_zoo.models.bnn_regression import (
    BayesianMLP,
    bnn_regression,
    fit_maximum_likelihood,
    layer_sizes,
    linear_forward,
    without_data_slot,
)

NUM_ROWS, NUM_FEATURES, HIDDEN = 12, 3, (5, 4)


@pytest.fixture
def data():
    generator = torch.Generator().manual_seed(0)
    return torch.randn(NUM_ROWS, NUM_FEATURES, generator=generator), torch.randn(NUM_ROWS, generator=generator)


@pytest.fixture(autouse=True)
def fresh_state():
    pyro.set_rng_seed(0)
    with pyro.get_param_store().scope():
        yield


def latent_sites(trace):
    return {name: site for name, site in trace.nodes.items()
            if site["type"] == "sample" and not site["is_observed"] and not site["name"] == "data"}


def test_layer_sizes():
    assert layer_sizes(3, (5, 4)) == ((3, 5), (5, 4), (4, 1))
    assert layer_sizes(2) == ((2, 50), (50, 1))
    with pytest.raises(ValueError):
        layer_sizes(2, (0,))


def test_linear_forward_handles_leading_sample_dims():
    x, weight, bias = torch.randn(7, 3), torch.randn(4, 2, 3), torch.randn(4, 2)
    out = linear_forward(x, weight, bias)
    assert out.shape == (4, 7, 2)
    for sample in range(4):
        torch.testing.assert_close(out[sample], x @ weight[sample].T + bias[sample])
    assert linear_forward(x, weight[0], bias[0]).shape == (7, 2)


def test_without_data_slot_drops_only_a_size_one_plate_slot():
    assert without_data_slot(torch.zeros(6, 1, 4, 3), 2).shape == (6, 4, 3)  # vectorised particles
    assert without_data_slot(torch.zeros(6, 4, 3), 2).shape == (6, 4, 3)  # Predictive(parallel=True)
    assert without_data_slot(torch.zeros(4, 3), 2).shape == (4, 3)
    assert without_data_slot(torch.zeros(6, 1), 0).shape == (6,)


def test_default_network_and_site_shapes(data):
    x, y = data
    net = BayesianMLP(NUM_FEATURES)
    trace = poutine.trace(net).get_trace(x, y)
    shapes = {name: tuple(site["value"].shape) for name, site in latent_sites(trace).items()}
    assert shapes == {"layers.0.weight": (50, 3), "layers.0.bias": (50,), "layers.1.weight": (1, 50),
                      "layers.1.bias": (1,), "sigma": ()}
    assert trace.nodes["y"]["value"] is y
    assert trace.nodes["_RETURN"]["value"].shape == (NUM_ROWS,)
    prior = trace.nodes["layers.0.weight"]["fn"]
    assert isinstance(prior.base_dist, dist.Normal) and float(prior.base_dist.scale.max()) == 1.0
    assert isinstance(trace.nodes["sigma"]["fn"], dist.HalfNormal)


def test_prior_scales_and_hidden_layers_are_configurable(data):
    x, _ = data
    net = BayesianMLP(NUM_FEATURES, hidden=HIDDEN, prior_scale=0.3, noise_prior_scale=2.0)
    trace = poutine.trace(net).get_trace(x)
    shapes = {name: tuple(site["value"].shape) for name, site in latent_sites(trace).items()}
    assert shapes["layers.1.weight"] == (4, 5) and shapes["layers.2.weight"] == (1, 4)
    assert float(trace.nodes["layers.2.bias"]["fn"].base_dist.scale.max()) == pytest.approx(0.3)
    assert float(trace.nodes["sigma"]["fn"].scale) == pytest.approx(2.0)
    assert trace.nodes["y"]["value"].shape == (NUM_ROWS,) and not trace.nodes["y"]["is_observed"]


def test_prior_constants_are_buffers():
    net = BayesianMLP(NUM_FEATURES, prior_scale=0.5)
    buffers = dict(net.named_buffers())
    assert set(buffers) == {"layers.0.prior_loc", "layers.0.prior_scale", "layers.1.prior_loc",
                            "layers.1.prior_scale", "noise_prior_scale"}
    assert list(net.parameters()) == []
    net = net.to(torch.float64)
    assert net.layers[0].prior_scale.dtype == torch.float64 and float(net.layers[0].prior_scale) == 0.5


def test_subsampling_observes_a_minibatch_scaled_to_the_data(data):
    x, y = data
    net = BayesianMLP(NUM_FEATURES, hidden=HIDDEN)
    trace = poutine.trace(net).get_trace(x, y, subsample_size=5)
    index = trace.nodes["data"]["value"]
    assert index.shape == (5,)
    torch.testing.assert_close(trace.nodes["y"]["value"], y[index])
    assert trace.nodes["y"]["scale"] == pytest.approx(NUM_ROWS / 5)


def test_vectorised_weights_give_one_prediction_per_sample(data):
    """Weights shaped (S, 1, out, in), as vectorised ELBO particles make them, match S separate forward passes."""
    x, y = data
    net = BayesianMLP(NUM_FEATURES, hidden=HIDDEN)
    num_samples = 6
    with pyro.plate("particles", num_samples, dim=-2):
        prior_trace = poutine.trace(net).get_trace(x, y)
    draws = {name: site["value"] for name, site in latent_sites(prior_trace).items()}
    assert draws["layers.0.weight"].shape == (num_samples, 1, 5, 3) and draws["sigma"].shape == (num_samples, 1)
    assert prior_trace.nodes["_RETURN"]["value"].shape == (num_samples, NUM_ROWS)
    assert prior_trace.nodes["y"]["fn"].batch_shape == (num_samples, NUM_ROWS)
    for sample in range(num_samples):
        one = {name: value[sample].reshape(value.shape[2:]) for name, value in draws.items()}
        mean = poutine.condition(net, one)(x, y)
        torch.testing.assert_close(prior_trace.nodes["_RETURN"]["value"][sample], mean)


def bind(net):
    return functools.partial(bnn_regression, net=net), functools.partial(bnn_regression_guide, net=net)


@pytest.mark.parametrize("make_guide", ["mean_field", AutoNormal, AutoLowRankMultivariateNormal, AutoDelta])
def test_vectorised_elbo_and_parallel_predictive(data, make_guide):
    x, y = data
    net = BayesianMLP(NUM_FEATURES, hidden=HIDDEN)
    model, guide = bind(net)
    guide = guide if make_guide == "mean_field" else make_guide(model)
    loss = Trace_ELBO(num_particles=5, vectorize_particles=True, max_plate_nesting=1).loss(model, guide, x, y)
    assert math.isfinite(loss)
    predictive = Predictive(model, guide=guide, num_samples=7, parallel=True, return_sites=["y", "_RETURN", "sigma"])
    samples = predictive(x)
    assert samples["y"].shape == (7, NUM_ROWS) and samples["_RETURN"].shape == (7, NUM_ROWS)
    assert samples["sigma"].shape == (7, 1)


def test_parallel_predictive_matches_sequential_for_a_point_estimate(data):
    x, y = data
    net = BayesianMLP(NUM_FEATURES, hidden=HIDDEN)
    model, _ = bind(net)
    guide = AutoDelta(model)
    guide(x, y)
    means = [Predictive(model, guide=guide, num_samples=3, parallel=parallel, return_sites=["_RETURN"])(x)["_RETURN"]
             for parallel in (True, False)]
    torch.testing.assert_close(means[0], means[1])
    torch.testing.assert_close(means[0][0], means[0][2])


def test_guide_sites_match_model_sites(data):
    x, y = data
    net = BayesianMLP(NUM_FEATURES, hidden=HIDDEN)
    model, guide = bind(net)
    guide_trace = poutine.trace(guide).get_trace(x, y)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x, y)
    guide_sites = {name: site["value"].shape for name, site in latent_sites(guide_trace).items()}
    model_sites = {name: site["value"].shape for name, site in latent_sites(model_trace).items()}
    assert guide_sites == model_sites
    for name, site in latent_sites(guide_trace).items():
        assert site["fn"].event_shape == model_trace.nodes[name]["fn"].event_shape, name
        assert model_trace.nodes[name]["value"] is site["value"], name


def test_guide_initialisation_is_small_scale_and_kaiming_uniform(data):
    x, y = data
    net = BayesianMLP(NUM_FEATURES, hidden=(200,))
    _, guide = bind(net)
    trace = poutine.trace(guide).get_trace(x, y)
    loc = pyro.param("bnn_regression.layers.0.weight_loc").detach()
    bound = 1 / math.sqrt(NUM_FEATURES)
    assert loc.shape == (200, 3) and float(loc.abs().max()) <= bound and float(loc.abs().max()) > 0.9 * bound
    scale = trace.nodes["layers.1.weight"]["fn"].base_dist.scale
    torch.testing.assert_close(scale, torch.full((1, 200), 0.01))
    assert float(pyro.param("bnn_regression.sigma_loc").detach().exp()) == pytest.approx(float(y.std()), rel=1e-5)
    assert all(name.endswith(("_loc", "_scale_raw")) for name in pyro.get_param_store().keys())


def test_model_and_guide_follow_the_device_of_x(data):
    """On the meta device (no values, so no validation): every sample and parameter lands on x's device."""
    x, y = (tensor.to("meta") for tensor in data)
    net = BayesianMLP(NUM_FEATURES, hidden=HIDDEN)
    model, guide = bind(net)
    with pyro.validation_enabled(False):
        guide_trace = poutine.trace(guide).get_trace(x, y)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x, y, subsample_size=4)
    assert net.layers[0].prior_scale.device.type == "meta"
    for trace in (guide_trace, model_trace):
        for name, site in trace.nodes.items():
            if site["type"] in ("sample", "param"):
                assert site["value"].device.type == "meta", name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_model_and_guide_on_cuda(data):
    x, y = (tensor.cuda() for tensor in data)
    net = BayesianMLP(NUM_FEATURES, hidden=HIDDEN)
    model, guide = bind(net)
    loss = Trace_ELBO(num_particles=3, vectorize_particles=True, max_plate_nesting=1).loss(model, guide, x, y)
    assert math.isfinite(loss) and net.noise_prior_scale.is_cuda and pyro.param("bnn_regression.sigma_loc").is_cuda


def test_function_entry_builds_a_network_when_none_is_given(data):
    x, y = data
    trace = poutine.trace(bnn_regression).get_trace(x, y, hidden=(3,), prior_scale=0.5)
    assert trace.nodes["layers.0.weight"]["value"].shape == (3, 3)


def test_maximum_likelihood_network_recovers_a_line_and_its_noise():
    generator = torch.Generator().manual_seed(1)
    x = torch.linspace(-2, 2, 400).unsqueeze(-1)
    y = 1.5 * x.squeeze(-1) + 0.5 + 0.2 * torch.randn(400, generator=generator)
    net = fit_maximum_likelihood(x, y, hidden=(8,), num_steps=1500, lr=0.02, seed=0)
    assert float(net.sigma.detach()) == pytest.approx(0.2, rel=0.15)
    with torch.no_grad():
        assert float((net(x) - (1.5 * x.squeeze(-1) + 0.5)).abs().max()) < 0.1
    assert net.log_likelihood(x, y).shape == (400,)


def test_maximum_likelihood_without_a_seed_draws_from_the_callers_stream():
    """``seed=None`` (a comparison from Python without a seed) uses torch's global stream: two calls from the
    same global state agree, from different states they differ, and a seed leaves the global state alone."""
    x = torch.linspace(-2, 2, 40).unsqueeze(-1)
    y = x.squeeze(-1).clone()
    weights = []
    for state in (0, 0, 1):
        torch.manual_seed(state)
        net = fit_maximum_likelihood(x, y, hidden=(4,), num_steps=5, batch_size=8, seed=None)
        weights.append(net.layers[0].weight.detach())
    assert torch.equal(weights[0], weights[1]) and not torch.equal(weights[0], weights[2])
    torch.manual_seed(3)
    expected = torch.rand(())
    torch.manual_seed(3)
    fit_maximum_likelihood(x, y, hidden=(4,), num_steps=5, batch_size=8, seed=7)
    assert torch.equal(torch.rand(()), expected)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_the_model_follows_the_datas_dtype_not_torchs_default(dtype, device):
    """Features from numpy or pandas arrive as float64: a prior draw and the hand-written guide's ELBO run in
    the data's dtype, with torch's default set to the other one."""
    other = torch.float32 if dtype == torch.float64 else torch.float64
    previous = torch.get_default_dtype()
    torch.set_default_dtype(other)
    try:
        x = torch.randn(8, 3, device=device, dtype=dtype)
        prediction = bnn_regression(x, hidden=(4,))
        loss = Trace_ELBO().differentiable_loss(functools.partial(bnn_regression, hidden=(4,)),
                                                functools.partial(bnn_regression_guide, hidden=(4,)), x, x.sum(-1))
    finally:
        torch.set_default_dtype(previous)
    assert prediction.dtype == dtype and loss.dtype == dtype and torch.isfinite(loss)
