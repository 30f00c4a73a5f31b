"""The zoo's ELBOs compute Pyro's numbers without reading anything back to the host, or copying to the device.

Against Pyro's Trace_ELBO, TraceMeanField_ELBO and TraceEnum_ELBO, same seed, every family and its guides
through the engine's own step: the same loss and the same gradients to float tolerance. On PyTorch's
``meta`` device (tensors with shapes and no values) any ``.item()``, ``float()`` or branch on a tensor's
value fails, and so does mixing in a tensor made on another device: a step that runs there holds no host
synchronisation and makes everything on its inputs' device, as a captured CUDA graph requires. A step
also builds no tensor from Python numbers (``torch.tensor(1.0)`` in a distribution): on a GPU that is a
copy from the host at every step, which a CUDA graph cannot record; any device shows the call.
"""

import math
from dataclasses import replace

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.distributions import constraints
from pyro.infer import Trace_ELBO, TraceEnum_ELBO, TraceMeanField_ELBO, config_enumerate

from pyro_vi_zoo.engine import ELBOS, FitSettings, make_step, resolve_settings
from pyro_vi_zoo.engine.capture import CAPTURABLE_ELBOS, HostTrafficRecorder
from pyro_vi_zoo.engine.estimators import _ScoreFunctionGuide
from pyro_vi_zoo.models.distributions import HalfNormal
from pyro_vi_zoo.registry import get_family
from pyro_vi_zoo.runner import guide_choice

#: (family, guide, family options) for every family; VAE and AutoRec take a minibatch as arguments
CASES = [("bayes_regression", "mean_field", {}), ("bayes_regression", "auto_normal", {}),
         ("bayes_regression", "auto_mvn", {}), ("bnn_regression", "mean_field", {}),
         ("bnn_regression", "auto_normal", {}), ("gmm", "mean_field", {}), ("gmm", "auto_normal", {}),
         ("vae", "mean_field", {"latent_dim": 2, "hidden": "16"}), ("vae", "iaf", {"latent_dim": 2, "hidden": "16"}),
         ("vae", "auto_normal", {"latent_dim": 2, "hidden": "16"}), ("autorec", "mean_field", {"hidden": 8}),
         ("autorec", "last_layer", {"hidden": 8}), ("autorec", "auto_normal", {"hidden": 8})]
ENUMERATED = [("gmm", "mean_field", {"assignments": "enumerated"}), ("gmm", "auto_normal", {"assignments": "enumerated"}),
              ("gmm", "auto_delta", {"assignments": "enumerated", "ordered": True})]
PYRO = {"trace": Trace_ELBO, "meanfield": TraceMeanField_ELBO, "enum": TraceEnum_ELBO}


def small(name, device, rows=64, **options):
    """A family on its first ``rows`` training rows: the setup, and the step's arguments and keywords."""
    family = get_family(name)
    dataset = family.load_data(None, **({"train_limit": rows, "test_limit": 8} if name == "vae" else {}))
    if name != "vae":
        dataset = replace(dataset, train=tuple(a[:rows] for a in dataset.train), test=None)
    dataset = dataset.to(device)
    setup = family.setup(dataset, **options)
    if setup.make_batch is not None:
        args, kwargs = setup.make_batch(torch.arange(16, device=device))
    else:
        args, kwargs = dataset.train, {}
    return family, setup, tuple(args), dict(kwargs)


def same_numbers(step, pyro_elbo, args, kwargs, seed=5, guide_wrapper=None):
    """The step's loss and gradients, and Pyro's ELBO's on the same model, guide and draws."""
    results = []
    with step.scope():
        for loss_fn in (lambda: step.loss_fn(*args, **kwargs),
                        lambda: pyro_elbo.differentiable_loss(step.model, (guide_wrapper or (lambda g: g))(step.guide),
                                                              *args, **kwargs)):
            pyro.set_rng_seed(seed)
            loss = loss_fn()
            gradients = torch.autograd.grad(loss, step.params, allow_unused=True)
            results.append((loss.detach(), [torch.zeros_like(p) if g is None else g
                                            for p, g in zip(step.params, gradients)]))
    (ours, our_gradients), (theirs, their_gradients) = results
    assert torch.allclose(ours, torch.as_tensor(theirs, dtype=ours.dtype), rtol=1e-5, atol=1e-3), (ours, theirs)
    assert any(bool(g.abs().sum() > 0) for g in our_gradients)
    for mine, pyros in zip(our_gradients, their_gradients):
        assert torch.allclose(mine, pyros, rtol=1e-4, atol=1e-4)


def family_step(name, guide_name, options, elbo, device, particles=3):
    family, setup, args, kwargs = small(name, device, **options)
    choice = guide_choice(guide_name, setup, family)
    settings = resolve_settings({}, FitSettings(elbo=elbo, num_particles=particles, seed=0, device=device))
    step = make_step(setup.model, choice.build, args, settings, train_kwargs=kwargs,
                     max_plate_nesting=setup.max_plate_nesting)
    return step, args, kwargs, setup


@pytest.mark.parametrize("elbo_name", ["trace", "meanfield"])
@pytest.mark.parametrize("name, guide_name, options", CASES)
def test_same_loss_and_gradients_as_pyro(name, guide_name, options, elbo_name, device):
    step, args, kwargs, setup = family_step(name, guide_name, options, elbo_name, device)
    pyro_elbo = PYRO[elbo_name](num_particles=3, vectorize_particles=True, max_plate_nesting=setup.max_plate_nesting)
    same_numbers(step, pyro_elbo, args, kwargs)


@pytest.mark.parametrize("name, guide_name, options", ENUMERATED)
def test_enumerated_assignments_take_pyros_trace_enum_numbers(name, guide_name, options, device):
    """``--elbo trace`` on a model with enumerated sites becomes the zoo's TraceEnum_ELBO."""
    step, args, kwargs, setup = family_step(name, guide_name, options, "trace", device)
    assert step.settings.elbo == "enum" and "enum" in CAPTURABLE_ELBOS
    pyro_elbo = TraceEnum_ELBO(num_particles=3, vectorize_particles=True, max_plate_nesting=setup.max_plate_nesting)
    same_numbers(step, pyro_elbo, args, kwargs)


def test_a_guide_that_enumerates_takes_pyros_dice_path_and_says_it_reads_back(device):
    """Guide-side enumeration: Pyro's DiCE numbers, and the reason the step would run eagerly on CUDA."""
    x = torch.tensor([0.1, 2.3, -0.4, 1.9, 0.7], device=device)

    @config_enumerate
    def enumerating_guide(x):
        discrete_guide(x)

    settings = resolve_settings({}, FitSettings(elbo="enum", seed=0, device=device))
    step = make_step(discrete_latents, lambda: enumerating_guide, (x,), settings)
    assert "the guide enumerates or samples a discrete site" in step.elbo.reads_back
    same_numbers(step, TraceEnum_ELBO(max_plate_nesting=1), (x,), {})
    model_only, *_ = family_step(*ENUMERATED[0], "trace", device)
    assert model_only.elbo.reads_back is None


def discrete_latents(x):
    """A mean with two-valued offsets per point: the offsets are guide sites without ``rsample``."""
    mu = pyro.sample("mu", dist.Normal(x.new_zeros(()), 1.0))
    with pyro.plate("data", x.shape[0]):
        offset = pyro.sample("offset", dist.Bernoulli(x.new_full((), 0.3)))
        pyro.sample("x", dist.Normal(mu + 2.0 * offset, 1.0), obs=x)


def discrete_guide(x):
    loc = pyro.param("loc", x.new_zeros(()))
    scale = pyro.param("scale", x.new_ones(()), constraint=constraints.positive)
    logits = pyro.param("logits", x.new_zeros(x.shape))
    pyro.sample("mu", dist.Normal(loc, scale))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("offset", dist.Bernoulli(logits=logits))


@pytest.mark.parametrize("elbo_name", ["trace", "score"])
def test_score_function_surrogates_take_pyros_numbers(elbo_name, device):
    """A guide with sites that are not reparameterised (``trace``), and every site treated so (``score``):
    Pyro's Trace_ELBO surrogate, Rao-Blackwellised over the plate, with no host synchronisation."""
    x = torch.tensor([0.1, 2.3, -0.4, 1.9, 0.7], device=device)
    settings = resolve_settings({}, FitSettings(elbo=elbo_name, num_particles=4, seed=0, device=device))
    step = make_step(discrete_latents, lambda: discrete_guide, (x,), settings)
    wrapper = _ScoreFunctionGuide() if elbo_name == "score" else None
    same_numbers(step, Trace_ELBO(num_particles=4, vectorize_particles=True, max_plate_nesting=1), (x,), {},
                 guide_wrapper=wrapper)


def guide_parameters(guide):
    """A module guide's parameters, or a function guide's (in the param store)."""
    if isinstance(guide, torch.nn.Module):
        return list(guide.parameters())
    return [pyro.get_param_store()[name].unconstrained() for name in pyro.get_param_store().keys()]


def backward_on_meta(elbo_name, model, guide, *args, max_plate_nesting=1, **kwargs):
    """One loss and backward on meta tensors; the loss and the guide's parameters."""
    with pyro.settings.context(module_local_params=True), pyro.get_param_store().scope(), \
            pyro.validation_enabled(False):
        loss = ELBOS[elbo_name](max_plate_nesting=max_plate_nesting).differentiable_loss(model, guide, *args, **kwargs)
        loss.backward()
        parameters = guide_parameters(guide)
    assert loss.device.type == "meta"
    assert parameters and all(p.grad is not None and p.grad.device.type == "meta" for p in parameters)


@pytest.mark.parametrize("elbo_name", ["trace", "meanfield", "stl"])
@pytest.mark.parametrize("name, guide_name", [("bayes_regression", "mean_field"), ("bnn_regression", "mean_field"),
                                              ("autorec", "mean_field"), ("autorec", "last_layer")])
def test_the_step_runs_on_the_meta_device(name, guide_name, elbo_name):
    """The hand-written guides (auto guides read values once, when they set themselves up, before any
    step); gmm is left out: torch has no meta kernel for Dirichlet sampling (the VAE's step: test_vae_model).
    AutoRec's setup reads the ratings (their mean), so its network and batch move to meta after it."""
    if name == "autorec":
        family, setup, args, kwargs = small(name, "cpu", hidden=8)
        setup.model.to("meta")
        args = tuple(a.to("meta") for a in args)
        kwargs = {k: v.to("meta") if torch.is_tensor(v) else v for k, v in kwargs.items()}
    else:
        family, setup, args, kwargs = small(name, "meta")
    with pyro.settings.context(module_local_params=True):
        guide = guide_choice(guide_name, setup, family).build()
    backward_on_meta(elbo_name, setup.model, guide, *args, max_plate_nesting=setup.max_plate_nesting, **kwargs)


def enumerated_mixture(x):
    locs = pyro.sample("locs", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
    with pyro.plate("data", x.shape[0]):
        component = pyro.sample("component", dist.Categorical(logits=x.new_zeros(2)), infer={"enumerate": "parallel"})
        pyro.sample("x", dist.Normal(locs[component], 1.0), obs=x)


def locs_guide(x):
    loc = pyro.param("loc", x.new_zeros(2))
    scale = pyro.param("scale", x.new_ones(2), constraint=constraints.positive)
    pyro.sample("locs", dist.Normal(loc, scale).to_event(1))


def test_enumerated_and_score_function_steps_run_on_the_meta_device():
    x = torch.zeros(7, device="meta")
    backward_on_meta("enum", enumerated_mixture, locs_guide, x)
    backward_on_meta("trace", discrete_latents, discrete_guide, x)
    backward_on_meta("score", discrete_latents, discrete_guide, x)


@pytest.mark.parametrize("name, guide_name, options", CASES + ENUMERATED)
def test_a_step_copies_no_numbers_from_the_host_and_reads_none_back(name, guide_name, options, device):
    step, *_ = family_step(name, guide_name, options, "trace", device)
    with step.scope(), pyro.validation_enabled(False):  # as the fit runs it
        step()  # the first step may set things up
        with HostTrafficRecorder(include_cpu=True) as recorder:  # on the CPU too, where nothing would sync
            step()
    assert not recorder.sites, recorder.sites[0]


def test_the_half_normal_made_on_the_device_is_pyros(device):
    scale = torch.tensor([0.5, 2.0], device=device)
    value = torch.tensor([0.3, 1.7], device=device)
    with pyro.validation_enabled(False), HostTrafficRecorder(include_cpu=True) as recorder:
        ours = HalfNormal(scale).expand((3, 2))
        log_prob = ours.log_prob(value)
    assert not recorder.sites, recorder.sites[0]
    pyros = dist.HalfNormal(scale).expand((3, 2))
    assert type(ours) is HalfNormal and ours.batch_shape == pyros.batch_shape == (3, 2)
    assert torch.allclose(log_prob, pyros.log_prob(value)) and torch.allclose(ours.mean, pyros.mean)
    assert bool((ours.rsample((100,)) >= 0).all()) and ours.support is pyros.support


def test_the_recorder_names_the_line_that_copies_a_number_to_the_device():
    """What a GPU fit says before it would record a step that copies from the host (meta stands in for CUDA:
    the recorder ignores CPU tensors, which cost no copy, and empty ones)."""
    x = torch.zeros(4, device="meta")
    with pyro.validation_enabled(False), HostTrafficRecorder() as recorder:
        dist.Normal(x, 2.5).log_prob(x)  # the scale becomes torch.tensor(2.5) on x's device
        torch.tensor([1.0, 2.0]), torch.tensor(()), dist.Normal(x, x.new_full((), 2.5))
    assert len(recorder.sites) == 1, recorder.sites
    assert recorder.sites[0].startswith("tensor(2.5) in ") and __file__ in recorder.sites[0]
    assert "dist.Normal(x, 2.5).log_prob(x)" in recorder.sites[0]


def test_the_recorder_names_the_lines_that_read_values_back_to_the_host():
    """What would synchronise on a GPU, found on the CPU (``include_cpu``); nothing that stays on the device."""
    x = torch.linspace(-1.0, 1.0, 5)
    with HostTrafficRecorder(include_cpu=True) as recorder:
        x.sum().item()
        if x.sum() > 0:
            pass
        x[x > 0], x.nonzero(), x.cpu(), f"{x.mean():.2f}"
        x * 2.0, x[1:3], x[torch.arange(0, 4, 2)], torch.where(x > 0, x, -x), x.to(torch.float64), x.shape[0]
    assert [site.split("(")[0] for site in recorder.reads] == \
        ["item", "__bool__", "__getitem__", "nonzero", "cpu", "__format__"], recorder.reads
    assert not recorder.copies and __file__ in recorder.reads[0] and "x.sum().item()" in recorder.reads[0]
    assert recorder.refusal().startswith("the step reads a value back to the host at every step, item() in ")
    with HostTrafficRecorder() as recorder:  # CPU tensors: nothing would cross to the host
        x.sum().item()
    assert recorder.refusal() is None


@pytest.mark.parametrize("elbo_name", ["trace", "meanfield"])
def test_the_elbo_of_a_conjugate_model_is_its_closed_form(elbo_name, device):
    """y_i ~ N(mu, 1), mu ~ N(0, 2²), q(mu) = N(0.4, 0.3²): ELBO = Σ E_q log N(y_i; mu, 1) − KL(q ‖ p) in closed
    form. With 200 000 vectorised particles the estimate's Monte Carlo error is below 0.001, against a
    tolerance of 0.02 (the mean-field ELBO's KL is exact, so its error is the likelihood term's alone)."""
    y = torch.tensor([0.1, 0.9, -0.4, 1.3, 0.6], dtype=torch.float64, device=device)

    def model(y):
        mu = pyro.sample("mu", dist.Normal(y.new_zeros(()), 2.0))
        with pyro.plate("data", y.shape[0]):
            pyro.sample("y", dist.Normal(mu, 1.0), obs=y)

    def guide(y):
        pyro.sample("mu", dist.Normal(y.new_full((), 0.4), 0.3))

    m, s = 0.4, 0.3
    expected_log_likelihood = float((-0.5 * math.log(2 * math.pi) - 0.5 * ((y - m) ** 2 + s**2)).sum())
    kl = math.log(2.0 / s) + (s**2 + m**2) / (2 * 2.0**2) - 0.5
    pyro.set_rng_seed(0)
    elbo = ELBOS[elbo_name](num_particles=200_000, vectorize_particles=True, max_plate_nesting=1)
    assert -float(elbo.differentiable_loss(model, guide, y)) == pytest.approx(expected_log_likelihood - kl, abs=0.02)
