"""The VAE model and its amortised guides: exact log joints, minibatch scaling, sites, particles, a short fit."""

import functools
import math

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import RenyiELBO, Trace_ELBO
from pyro.infer.autoguide import AutoNormal
from torch.nn import functional as F

from pyro_vi_zoo.data.images import binarize, synthetic_images
from pyro_vi_zoo.errors import ZooError
from pyro_vi_zoo.guides.vae import Encoder, FreeNormal, IAFEncoder, vae_iaf_guide, vae_mean_field_guide
from pyro_vi_zoo.models.vae import MAX_PLATE_NESTING, Decoder, ParamStoreDecoder, create_data_plate, vae

LATENT_DIM = 3
HIDDEN = (16,)


def make_networks(device, flows=False):
    torch.manual_seed(0)
    decoder = Decoder(LATENT_DIM, HIDDEN).to(device)
    encoder_class = IAFEncoder if flows else Encoder
    options = {"flow_hidden_sizes": (8,)} if flows else {}
    return decoder, encoder_class(LATENT_DIM, HIDDEN, **options).to(device)


def binary_images(num_images, device, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.bernoulli(torch.full((num_images, 784), 0.3), generator=generator).to(device)


def model_and_guide(decoder, encoder, flows=False):
    guide = vae_iaf_guide if flows else vae_mean_field_guide
    return functools.partial(vae, decoder=decoder), functools.partial(guide, encoder=encoder)


def hand_log_joint(z, x, decoder):
    """log N(z; 0, I) + log Bernoulli(x; sigmoid(decoder(z))), summed over everything, written out."""
    log_prior = -0.5 * z**2 - 0.5 * math.log(2 * math.pi)
    logits = decoder(z)
    log_likelihood = x * logits - F.softplus(logits)
    return log_prior.sum() + log_likelihood.sum()


def test_decoder_and_encoder_shapes_broadcast_over_particles(device):
    decoder, encoder = make_networks(device)
    assert decoder(torch.zeros(4, 5, LATENT_DIM, device=device)).shape == (4, 5, 784)
    loc, scale = encoder(binary_images(5, device))
    assert loc.shape == scale.shape == (5, LATENT_DIM)
    assert (scale > 0).all() and loc.device.type == torch.device(device).type
    relu_decoder = Decoder(LATENT_DIM, HIDDEN, activation="relu").to(device)
    assert relu_decoder(torch.zeros(2, LATENT_DIM, device=device)).shape == (2, 784)
    with pytest.raises(ZooError, match="unknown activation"):
        Decoder(activation="sigmoid")


def test_model_trace_shapes_and_device(device):
    decoder, _ = make_networks(device)
    x = binary_images(5, device)
    trace = poutine.trace(vae).get_trace(x, decoder=decoder, latent_dim=LATENT_DIM)
    assert trace.nodes["z"]["value"].shape == (5, LATENT_DIM)
    assert trace.nodes["x"]["value"] is x and trace.nodes["x"]["is_observed"]
    assert trace.nodes["_RETURN"]["value"].shape == (5, 784)
    assert trace.nodes["z"]["value"].device == x.device


def test_model_draws_images_without_data(device):
    decoder, encoder = make_networks(device)
    draw = vae(None, decoder=decoder, latent_dim=LATENT_DIM, num_examples=7)
    trace = poutine.trace(vae).get_trace(None, decoder=decoder, latent_dim=LATENT_DIM, num_examples=7)
    images = trace.nodes["x"]["value"]
    assert draw.shape == images.shape == (7, 784)
    assert set(images.unique().tolist()) <= {0.0, 1.0}
    assert images.device.type == torch.device(device).type
    with pytest.raises(ZooError, match="num_examples"):
        vae(None, decoder=decoder, latent_dim=LATENT_DIM)
    with pytest.raises(ZooError, match="needs the images"):
        vae_mean_field_guide(None, encoder=encoder, latent_dim=LATENT_DIM, num_examples=7)


def test_log_joint_equals_the_hand_computation(device):
    decoder, _ = make_networks(device)
    x = binary_images(6, device)
    z = torch.randn(6, LATENT_DIM, device=device)
    conditioned = poutine.condition(vae, data={"z": z})
    trace = poutine.trace(conditioned).get_trace(x, decoder=decoder, latent_dim=LATENT_DIM)
    expected = hand_log_joint(z, x, decoder)
    assert torch.allclose(trace.log_prob_sum(), expected, rtol=1e-5)


def test_subsample_scales_the_log_joint_by_full_size_over_batch(device):
    decoder, _ = make_networks(device)
    num_examples, x = 20, binary_images(5, device)
    z = torch.randn(5, LATENT_DIM, device=device)
    subsample = torch.tensor([0, 4, 9, 13, 19], device=device)
    conditioned = poutine.condition(vae, data={"z": z})
    batch_only = poutine.trace(conditioned).get_trace(x, decoder=decoder, latent_dim=LATENT_DIM)
    scaled = poutine.trace(conditioned).get_trace(x, decoder=decoder, latent_dim=LATENT_DIM,
                                                  num_examples=num_examples, subsample=subsample)
    assert scaled.nodes["x"]["scale"] == pytest.approx(num_examples / 5)
    assert torch.equal(scaled.nodes["data"]["value"], subsample)
    assert torch.allclose(scaled.log_prob_sum(), num_examples / 5 * batch_only.log_prob_sum(), rtol=1e-5)
    # without positions the batch is still scaled (an amortised guide needs none)
    positionless = poutine.trace(conditioned).get_trace(x, decoder=decoder, latent_dim=LATENT_DIM,
                                                        num_examples=num_examples)
    assert torch.allclose(positionless.log_prob_sum(), scaled.log_prob_sum(), rtol=1e-5)


def test_auto_normal_keeps_one_row_per_training_image_and_picks_the_batch_rows(device):
    decoder, _ = make_networks(device)
    model = functools.partial(vae, decoder=decoder)
    guide = AutoNormal(model, create_plates=create_data_plate)
    num_examples, subsample = 12, torch.tensor([1, 5, 6, 11], device=device)
    arguments = dict(latent_dim=LATENT_DIM, num_examples=num_examples, subsample=subsample)
    guide(binary_images(4, device), **arguments)
    locs = pyro.param("AutoNormal.locs.z")
    assert locs.shape == (num_examples, LATENT_DIM)
    with torch.no_grad():
        locs.copy_(torch.arange(num_examples * LATENT_DIM, dtype=locs.dtype, device=device).reshape(num_examples, -1))
    trace = poutine.trace(guide).get_trace(binary_images(4, device), **arguments)
    assert torch.equal(trace.nodes["z_unconstrained"]["fn"].base_dist.loc, locs[subsample])


@pytest.mark.parametrize("flows", [False, True], ids=["mean_field", "iaf"])
def test_guide_sites_match_the_model(device, flows):
    decoder, encoder = make_networks(device, flows)
    model, guide = model_and_guide(decoder, encoder, flows)
    x, subsample = binary_images(4, device), torch.tensor([0, 2, 5, 7], device=device)
    arguments = dict(latent_dim=LATENT_DIM, num_examples=8, subsample=subsample)
    guide_trace = poutine.trace(guide).get_trace(x, **arguments)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x, **arguments)
    latent = lambda trace: {name for name, site in trace.nodes.items()
                            if site["type"] == "sample" and not site["is_observed"]}
    assert latent(guide_trace) == latent(model_trace) == {"data", "z"}
    assert torch.equal(model_trace.nodes["z"]["value"], guide_trace.nodes["z"]["value"])
    assert guide_trace.nodes["z"]["value"].shape == (4, LATENT_DIM)


@pytest.mark.parametrize("flows", [False, True], ids=["mean_field", "iaf"])
def test_vectorised_particles(device, flows):
    decoder, encoder = make_networks(device, flows)
    model, guide = model_and_guide(decoder, encoder, flows)
    x, subsample = binary_images(5, device), torch.arange(5, device=device) * 2
    arguments = dict(latent_dim=LATENT_DIM, num_examples=10, subsample=subsample)
    with pyro.plate("particles", 4, dim=-1 - MAX_PLATE_NESTING):
        guide_trace = poutine.trace(guide).get_trace(x, **arguments)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x, **arguments)
    assert guide_trace.nodes["z"]["value"].shape == (4, 5, LATENT_DIM)
    assert model_trace.nodes["_RETURN"]["value"].shape == (4, 5, 784)
    elbo = Trace_ELBO(num_particles=4, vectorize_particles=True, max_plate_nesting=MAX_PLATE_NESTING)
    loss = elbo.differentiable_loss(model, guide, x, **arguments)
    loss.backward()
    assert torch.isfinite(loss) and loss.device == x.device
    assert all(p.grad is not None for p in [*decoder.parameters(), *encoder.parameters()])


@pytest.mark.parametrize("flows", [False, True], ids=["mean_field", "iaf"])
def test_step_reads_nothing_back_to_the_host(device, flows):
    """Capturable in a CUDA graph: on CUDA capture the loss and backward; on the CPU run them on the
    meta device, where any ``.item()`` or branch on a tensor's value fails (there are no values)."""
    step_device = device if device.startswith("cuda") else "meta"
    decoder, encoder = make_networks(step_device, flows)
    model, guide = model_and_guide(decoder, encoder, flows)
    x = torch.zeros(6, 784, device=step_device)
    subsample = torch.zeros(6, dtype=torch.long, device=step_device)
    arguments = dict(latent_dim=LATENT_DIM, num_examples=60, subsample=subsample)

    def loss():
        with pyro.plate("particles", 2, dim=-2):
            guide_trace = poutine.trace(guide).get_trace(x, **arguments)
            model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x, **arguments)
        value = guide_trace.log_prob_sum() - model_trace.log_prob_sum()
        value.backward()
        return value.detach()

    with pyro.validation_enabled(False):
        value = _captured(loss) if step_device != "meta" else loss()
    assert value.shape == () and value.device.type == torch.device(step_device).type


def _captured(step):
    """Warm up on a side stream, capture ``step`` in a CUDA graph, replay it twice; the last value."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        value = step()
    graph.replay()
    graph.replay()
    torch.cuda.synchronize()
    assert torch.isfinite(value)
    return value


def test_short_fit_raises_the_elbo(device):
    """200 synthetic images, minibatches of 50 with their positions, dynamic binarisation, 300 Adam steps."""
    decoder, encoder = make_networks(device)
    model, guide = model_and_guide(decoder, encoder)
    images = synthetic_images(num_train=200, num_test=0, seed=1).train[0].to(device)
    test_images = binarize(images, torch.Generator(device=device).manual_seed(5))
    generator = torch.Generator(device=device).manual_seed(0)
    evaluation = Trace_ELBO(num_particles=8, vectorize_particles=True, max_plate_nesting=1)
    elbo_per_image = lambda: -evaluation.loss(model, guide, test_images, latent_dim=LATENT_DIM) / len(images)

    before = elbo_per_image()
    loss = Trace_ELBO(max_plate_nesting=1)(model, guide)
    optimizer = torch.optim.Adam([*decoder.parameters(), *encoder.parameters()], lr=1e-2)
    for _ in range(300):
        subsample = torch.randperm(len(images), generator=generator, device=device)[:50]
        batch = binarize(images[subsample], generator)
        optimizer.zero_grad()
        loss(batch, latent_dim=LATENT_DIM, num_examples=len(images), subsample=subsample).backward()
        optimizer.step()
    after = elbo_per_image()
    assert after > before + 200, (before, after)


# ----------------------------------------------------------------------------- scaling, per-fit decoders, free Normals


def test_unscaled_plate_keeps_full_size_and_positions_but_not_the_scale(device):
    decoder, _ = make_networks(device)
    x, subsample = binary_images(5, device), torch.tensor([0, 4, 9, 13, 19], device=device)
    z = torch.randn(5, LATENT_DIM, device=device)
    conditioned = poutine.condition(vae, data={"z": z})
    arguments = dict(decoder=decoder, latent_dim=LATENT_DIM, num_examples=20, subsample=subsample)
    scaled = poutine.trace(conditioned).get_trace(x, **arguments)
    unscaled = poutine.trace(conditioned).get_trace(x, scale_to_full_data=False, **arguments)
    assert unscaled.nodes["x"]["scale"] == 1.0 and scaled.nodes["x"]["scale"] == pytest.approx(4.0)
    frame = unscaled.nodes["z"]["cond_indep_stack"][0]
    assert (frame.name, frame.size, frame.full_size) == ("data", 5, 20)
    assert torch.allclose(scaled.log_prob_sum(), 4.0 * unscaled.log_prob_sum(), rtol=1e-5)
    # an AutoNormal on the unscaled model still keeps one row per training image, unscaled too
    options = dict(latent_dim=LATENT_DIM, num_examples=20, subsample=subsample, scale_to_full_data=False)
    guide = AutoNormal(functools.partial(vae, decoder=decoder), create_plates=create_data_plate)
    guide_trace = poutine.trace(guide).get_trace(x, **options)
    assert pyro.param("AutoNormal.locs.z").shape == (20, LATENT_DIM) and guide_trace.nodes["z"]["scale"] == 1.0


def test_param_store_decoder_gives_every_store_its_own_weights(device):
    decoder = ParamStoreDecoder(LATENT_DIM, HIDDEN, device=device)
    z = torch.randn(4, LATENT_DIM, device=device)
    states = [{"params": {}, "constraints": {}} for _ in range(2)]
    outputs = []
    for state in states:
        with pyro.get_param_store().scope(state):
            outputs.append(decoder(z))
            assert torch.equal(decoder(z), outputs[-1])  # created once, then reused
            assert torch.allclose(decoder.module()(z), outputs[-1])
    assert not torch.allclose(outputs[0], outputs[1])
    weight_names = [name for name, _ in Decoder(LATENT_DIM, HIDDEN).named_parameters()]
    assert sorted(states[0]["params"]) == sorted(f"decoder$$${name}" for name in weight_names)
    with pyro.get_param_store().scope(states[0]):
        frozen = decoder.module()
        assert not any(p.requires_grad for p in frozen.parameters()) and not frozen.training
        logits = vae(binary_images(4, device), decoder=decoder, latent_dim=LATENT_DIM)
        logits.sum().backward()
    assert all(value.grad is not None for value in states[0]["params"].values())


def test_free_normal_starts_where_asked_and_picks_the_batch_rows(device):
    loc = torch.randn(10, LATENT_DIM, device=device)
    scale = torch.rand(10, LATENT_DIM, device=device) + 0.1
    guide = FreeNormal(loc, scale)
    torch.testing.assert_close(guide.loc.detach(), loc)
    torch.testing.assert_close(guide.scale.detach(), scale)
    subsample = torch.tensor([2, 5, 7], device=device)
    trace = poutine.trace(guide).get_trace(binary_images(3, device), num_examples=10, subsample=subsample)
    site = trace.nodes["z"]
    torch.testing.assert_close(site["fn"].base_dist.loc, loc[subsample])
    assert site["scale"] == pytest.approx(10 / 3)
    with pytest.raises(ZooError, match="one row per image"):
        guide(binary_images(4, device))


def test_unscaled_batches_give_pyros_renyi_elbo_the_iwae_bound(device):
    """Pyro's RenyiELBO(alpha=0) applies a plate's N / batch scale s inside its log-mean-exp; without the
    scale it is the IWAE bound Σ_i log (1/k) Σ_k w_ik, with it Σ_i log (1/k) Σ_k w_ik^s, which by the
    power-mean inequality exceeds s times the bound (it tends to s · max_k log w_ik: no longer a bound)."""
    decoder, encoder = make_networks(device)
    model, guide = model_and_guide(decoder, encoder)
    x, subsample = binary_images(10, device), torch.arange(10, 20, device=device)
    arguments = dict(latent_dim=LATENT_DIM, num_examples=60, subsample=subsample)
    renyi = RenyiELBO(alpha=0.0, num_particles=5, vectorize_particles=True, max_plate_nesting=1)
    losses = {}
    for scaled in (False, True):
        pyro.set_rng_seed(1)
        losses[scaled] = renyi.loss(model, guide, x, scale_to_full_data=scaled, **arguments)
    pyro.set_rng_seed(1)
    with pyro.plate("particles", 5, dim=-2), torch.no_grad():
        guide_trace = poutine.trace(guide).get_trace(x, **arguments)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x, **arguments)
    log_weights = sum(model_trace.nodes[name]["fn"].log_prob(model_trace.nodes[name]["value"]) for name in ("z", "x"))
    log_weights = log_weights - guide_trace.nodes["z"]["fn"].log_prob(guide_trace.nodes["z"]["value"])
    bound = float((torch.logsumexp(log_weights, 0) - math.log(5)).sum())
    assert -losses[False] == pytest.approx(bound, rel=1e-5)
    assert -losses[True] > 6 * bound + 1.0


def test_param_store_decoder_leaves_no_weights_behind_under_no_grad(device):
    """Shape-only traces (no gradients) outside any fit's store write nothing to the caller's store, so a
    second model with another architecture in the same process does not meet the first one's weights."""
    for latent_dim in (LATENT_DIM, LATENT_DIM + 2):
        decoder = ParamStoreDecoder(latent_dim, HIDDEN, device=device)
        with torch.no_grad():
            trace = poutine.trace(vae).get_trace(binary_images(3, device), decoder=decoder, latent_dim=latent_dim)
        assert trace.nodes["z"]["value"].shape == (3, latent_dim)
        assert not list(pyro.get_param_store().keys())
