"""The Bayesian AutoRec model and its guides, checked against hand computations on small tensors."""

import functools
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import Predictive, Trace_ELBO
from pyro.infer.autoguide import AutoDelta, AutoNormal

from pyro_vi_zoo.data.ratings import generated_ratings
from pyro_vi_zoo.guides.autorec import (
    ENCODER_SITES,
    AutoRecMeanField,
    autorec_init_loc_fn,
    autorec_last_layer_guide,
    autorec_mean_field,
)
from pyro_vi_zoo.models.autorec import (
    BayesianAutoRec,
    autorec,
    predict_mean,
    prior_scale_for_weight_decay,
    weight_decay_for_prior_scale,
)

ROWS, COLUMNS, HIDDEN = 6, 5, 3
WEIGHT_SITES = ("encoder.weight", "encoder.bias", "decoder.weight", "decoder.bias")


@pytest.fixture
def ratings(device):
    """Inputs (zeros where unobserved), targets equal to them, and the observation mask."""
    generator = torch.Generator().manual_seed(0)
    values = torch.randint(1, 6, (ROWS, COLUMNS), generator=generator).float()
    mask = torch.rand(ROWS, COLUMNS, generator=generator) < 0.6
    inputs = torch.where(mask, values, torch.zeros(()))
    return inputs.to(device), inputs.clone().to(device), mask.to(device)


def latent_sites(trace):
    return {name: site for name, site in trace.nodes.items()
            if site["type"] == "sample" and not site["is_observed"] and name != "rows"}


def fixed_weights(device, dtype=torch.float32, seed=1):
    generator = torch.Generator().manual_seed(seed)
    shapes = {"encoder.weight": (HIDDEN, COLUMNS), "encoder.bias": (HIDDEN,),
              "decoder.weight": (COLUMNS, HIDDEN), "decoder.bias": (COLUMNS,)}
    return {name: (0.5 * torch.randn(shape, generator=generator)).to(device, dtype) for name, shape in shapes.items()}


def by_hand_mean(inputs, weights):
    hidden = torch.sigmoid(inputs @ weights["encoder.weight"].T + weights["encoder.bias"])
    return hidden @ weights["decoder.weight"].T + weights["decoder.bias"]


def test_sites_shapes_and_priors(ratings):
    net = BayesianAutoRec(COLUMNS, hidden=HIDDEN, prior_scale=0.7, bias_prior_scale=4.0)
    trace = poutine.trace(net).get_trace(*ratings)
    shapes = {name: tuple(site["value"].shape) for name, site in latent_sites(trace).items()}
    assert shapes == {"encoder.weight": (HIDDEN, COLUMNS), "encoder.bias": (HIDDEN,),
                      "decoder.weight": (COLUMNS, HIDDEN), "decoder.bias": (COLUMNS,), "sigma": ()}
    prior_scales = lambda name: torch.unique(trace.nodes[name]["fn"].base_dist.scale).tolist()
    assert prior_scales("encoder.weight") == prior_scales("decoder.weight") == [pytest.approx(0.7)]
    assert prior_scales("encoder.bias") == prior_scales("decoder.bias") == [pytest.approx(4.0)]
    assert isinstance(trace.nodes["sigma"]["fn"], dist.HalfNormal)
    assert trace.nodes["ratings"]["is_observed"] and trace.nodes["ratings"]["fn"].event_shape == (COLUMNS,)
    assert all(buffer.device == ratings[0].device for buffer in net.buffers())
    fixed = BayesianAutoRec(COLUMNS, hidden=HIDDEN, noise_scale=0.9)
    assert "sigma" not in latent_sites(poutine.trace(fixed).get_trace(*ratings))
    assert BayesianAutoRec(COLUMNS).hidden == 500
    with pytest.raises(ValueError, match="activation"):
        BayesianAutoRec(COLUMNS, activation="swish")


def test_log_joint_matches_hand_computation(ratings, device):
    inputs, targets, mask = ratings
    weights = fixed_weights(device)
    sigma = torch.tensor(0.8, device=device)
    net = BayesianAutoRec(COLUMNS, hidden=HIDDEN, prior_scale=0.7, bias_prior_scale=3.0, noise_prior_scale=1.5)
    trace = poutine.trace(poutine.condition(net, data={**weights, "sigma": sigma})).get_trace(inputs, targets, mask)
    normal = lambda scale, value: dist.Normal(value.new_zeros(()), value.new_tensor(scale)).log_prob(value).sum()
    expected = (normal(0.7, weights["encoder.weight"]) + normal(0.7, weights["decoder.weight"])
                + normal(3.0, weights["encoder.bias"]) + normal(3.0, weights["decoder.bias"])
                + dist.HalfNormal(sigma.new_tensor(1.5)).log_prob(sigma)
                + dist.Normal(by_hand_mean(inputs, weights), sigma).log_prob(targets)[mask].sum())
    torch.testing.assert_close(trace.log_prob_sum(), expected)
    torch.testing.assert_close(trace.nodes["_RETURN"]["value"], by_hand_mean(inputs, weights))


def ratings_log_prob(net, weights, inputs, targets, mask, **kwargs):
    trace = poutine.trace(poutine.condition(net, data=weights)).get_trace(inputs, targets, mask, **kwargs)
    trace.compute_log_prob()
    return trace.nodes["ratings"]["log_prob_sum"]


def test_unobserved_entries_do_not_change_the_likelihood(ratings, device):
    inputs, targets, mask = ratings
    net = BayesianAutoRec(COLUMNS, hidden=HIDDEN, noise_scale=1.0)
    weights = fixed_weights(device)
    reference = ratings_log_prob(net, weights, inputs, targets, mask)
    changed = torch.where(mask, targets, torch.full_like(targets, 100.0))
    torch.testing.assert_close(ratings_log_prob(net, weights, inputs, changed, mask), reference)
    observed = targets.clone()
    observed[mask.nonzero()[0].unbind()] += 1.0
    assert not torch.isclose(ratings_log_prob(net, weights, inputs, observed, mask), reference)


def test_minibatch_scales_the_likelihood_by_rows_over_batch(ratings, device):
    inputs, targets, mask = ratings
    net = BayesianAutoRec(COLUMNS, hidden=HIDDEN, noise_scale=1.0)
    weights = fixed_weights(device)
    batch = torch.tensor([1, 4], device=device)
    args = (inputs[batch], targets[batch], mask[batch])
    unscaled = ratings_log_prob(net, weights, *args)
    scaled = ratings_log_prob(net, weights, *args, num_rows=40, subsample=batch)
    torch.testing.assert_close(scaled, unscaled * 20.0)
    with pytest.raises(ValueError, match="subsample"):
        net(*args, num_rows=40)


def test_map_objective_is_the_papers_loss(ratings, device):
    """-log p = (1 / (2 sigma^2)) (masked SSE + lambda/2 (||W||^2 + ||V||^2)) + const, with lambda = 2 sigma^2 / s^2."""
    inputs, targets, mask = ratings[0].double(), ratings[1].double(), ratings[2]
    sigma, weight_decay = 0.8, 0.3
    prior_scale = prior_scale_for_weight_decay(weight_decay, sigma)
    assert weight_decay_for_prior_scale(prior_scale, sigma) == pytest.approx(weight_decay)
    net = BayesianAutoRec(COLUMNS, hidden=HIDDEN, prior_scale=prior_scale, noise_scale=sigma).double()

    def negative_log_joint(weights):
        trace = poutine.trace(poutine.condition(net, data=weights)).get_trace(inputs, targets, mask)
        return -trace.log_prob_sum()

    def paper_loss(weights):
        squared_error = ((targets - by_hand_mean(inputs, weights))[mask] ** 2).sum()
        decay = weights["encoder.weight"].pow(2).sum() + weights["decoder.weight"].pow(2).sum()
        return (squared_error + weight_decay / 2 * decay) / (2 * sigma**2)

    first = fixed_weights(device, torch.float64, seed=1)
    second = {**fixed_weights(device, torch.float64, seed=2), "encoder.bias": first["encoder.bias"],
              "decoder.bias": first["decoder.bias"]}  # biases shared: their (wide) prior cancels in the difference
    torch.testing.assert_close(negative_log_joint(first) - negative_log_joint(second),
                               paper_loss(first) - paper_loss(second))


@pytest.mark.parametrize("noise_scale", [None, 0.9])
@pytest.mark.parametrize("make_guide", [autorec_mean_field, autorec_last_layer_guide])
def test_guide_sites_match_the_model(ratings, noise_scale, make_guide):
    net = BayesianAutoRec(COLUMNS, hidden=HIDDEN, noise_scale=noise_scale).to(ratings[0].device)
    guide = make_guide(net)
    model_sites = latent_sites(poutine.trace(net).get_trace(*ratings))
    guide_sites = latent_sites(poutine.trace(guide).get_trace(*ratings))
    assert set(guide_sites) == set(model_sites)
    for name, site in guide_sites.items():
        assert site["value"].shape == model_sites[name]["value"].shape
        assert site["value"].device == ratings[0].device
    if make_guide is autorec_last_layer_guide:
        assert all(isinstance(guide_sites[name]["fn"], dist.Delta) for name in ENCODER_SITES)
    assert isinstance(guide_sites["decoder.weight"]["fn"].base_dist, dist.Normal)
    scale = guide_sites["decoder.weight"]["fn"].base_dist.scale
    torch.testing.assert_close(scale, torch.full_like(scale, 0.01))
    assert set(guide.median()) == set(model_sites)


def test_guide_rejects_unknown_point_sites():
    with pytest.raises(ValueError, match="point_sites"):
        AutoRecMeanField(BayesianAutoRec(COLUMNS, hidden=HIDDEN), point_sites=("sigma",))


@pytest.mark.parametrize("guide_kind", ["mean_field", "last_layer", "auto_normal"])
def test_vectorised_particles(ratings, device, guide_kind):
    net = BayesianAutoRec(COLUMNS, hidden=HIDDEN).to(device)
    with pyro.settings.context(module_local_params=True):
        guide = {"mean_field": autorec_mean_field, "last_layer": autorec_last_layer_guide,
                 "auto_normal": AutoNormal}[guide_kind](net)
        elbo = Trace_ELBO(num_particles=3, vectorize_particles=True, max_plate_nesting=1)
        loss_fn = elbo(net, guide)
        batch = torch.tensor([0, 2, 5], device=device)
        loss = loss_fn(*(value[batch] for value in ratings), num_rows=ROWS, subsample=batch)
        loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in loss_fn.parameters())


def test_vectorised_particles_of_a_point_mass_equal_one_particle(ratings, device):
    """Every particle of AutoDelta is the same, so a wrong broadcast of sigma or the weights would show."""
    net = BayesianAutoRec(COLUMNS, hidden=HIDDEN, noise_scale=None).to(device)
    with pyro.settings.context(module_local_params=True):
        guide = AutoDelta(net, init_loc_fn=autorec_init_loc_fn(net, output_bias=3.0, noise_scale=0.7))
        single = Trace_ELBO(max_plate_nesting=1)(net, guide)(*ratings)
        several = Trace_ELBO(num_particles=3, vectorize_particles=True, max_plate_nesting=1)(net, guide)(*ratings)
    torch.testing.assert_close(several, single)


def test_predictive_and_posterior_draw_batches(ratings, device):
    inputs, _, mask = ratings
    net = BayesianAutoRec(COLUMNS, hidden=HIDDEN).to(device)
    guide = autorec_mean_field(net)
    draws = Predictive(net, guide=guide, num_samples=4, parallel=True)(inputs, None, mask)
    assert draws["ratings"].shape == (4, ROWS, COLUMNS)
    weights = {name: draws[name].squeeze(1) for name in WEIGHT_SITES}  # (4, ...) posterior draws
    means = predict_mean(inputs, weights)
    assert means.shape == (4, ROWS, COLUMNS)
    for sample in range(4):
        one = {name: value[sample] for name, value in weights.items()}
        torch.testing.assert_close(means[sample], by_hand_mean(inputs, one))
    torch.testing.assert_close(net.predict_mean(inputs, guide.median()), by_hand_mean(inputs, guide.median()))


def test_model_function_builds_a_network_on_the_inputs_device(ratings):
    mean = autorec(*ratings, hidden=HIDDEN, noise_scale=1.0)
    assert mean.shape == (ROWS, COLUMNS) and mean.device == ratings[0].device


def test_weight_decay_mapping():
    assert prior_scale_for_weight_decay(2.0, 1.0) == pytest.approx(1.0)
    assert prior_scale_for_weight_decay(0.5, 0.9) == pytest.approx(0.9 * math.sqrt(4.0))
    with pytest.raises(ValueError):
        prior_scale_for_weight_decay(0.0, 1.0)


def test_map_fit_beats_the_global_mean(device):
    data = generated_ratings(num_users=120, num_items=80, density=0.25, seed=0).to(device)
    inputs, _, mask = data.train
    _, test_targets, test_mask = data.test
    scored = test_mask & ~data.test_cold
    rmse = lambda prediction: (prediction - test_targets)[scored].pow(2).mean().sqrt()
    global_mean = inputs[mask].mean()
    net = BayesianAutoRec(data.num_columns, hidden=10, prior_scale=0.5, noise_scale=1.0).to(device)
    with pyro.settings.context(module_local_params=True):
        guide = AutoDelta(net, init_loc_fn=autorec_init_loc_fn(net, output_bias=float(global_mean)))
        loss_fn = Trace_ELBO()(net, guide)
        loss_fn(*data.train)
        optimizer = torch.optim.Adam(loss_fn.parameters(), lr=0.03)
        for _ in range(150):
            optimizer.zero_grad()
            loss_fn(*data.train).backward()
            optimizer.step()
    with torch.no_grad():
        prediction = net.predict_mean(inputs, guide.median()).clamp(data.rating_min, data.rating_max)
    assert rmse(prediction) < 0.9 * rmse(global_mean.expand_as(test_targets))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_the_model_and_its_guide_follow_the_ratings_dtype_not_torchs_default(dtype, device):
    """Ratings from numpy or pandas arrive as float64: the model's priors follow them, and a guide built from
    the model is made in the model's dtype (here also with torch's default set to the other dtype)."""
    other = torch.float32 if dtype == torch.float64 else torch.float64
    previous = torch.get_default_dtype()
    torch.set_default_dtype(other)
    try:
        ratings = torch.randint(1, 6, (ROWS, COLUMNS), device=device).to(dtype)
        net = BayesianAutoRec(COLUMNS, hidden=HIDDEN)
        net(ratings)  # the first call moves the priors to the data
        guide = autorec_mean_field(net)
        loss = Trace_ELBO().differentiable_loss(functools.partial(autorec, net=net), guide, ratings, ratings)
    finally:
        torch.set_default_dtype(previous)
    assert loss.dtype == dtype and torch.isfinite(loss) and guide.encoder_weight_loc.dtype == dtype
