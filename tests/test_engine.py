"""The engine: reproducibility, isolation between fits, the NaN guard, settings resolution, random state, devices."""

import inspect
import subprocess
import sys

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_vi_zoo import DivergenceError, FitSettings, ZooError, fit
from pyro_vi_zoo.data.regression import cubic_arrays
from pyro_vi_zoo.devices import resolve_device
from pyro_vi_zoo.engine import resolve_settings
from pyro_vi_zoo.registry import get_family

SMALL = dict(steps=40, progress=False)


def small_data():
    x, y = cubic_arrays(300, seed=5)
    return x, y


def test_same_seed_gives_identical_fits(device):
    first = fit("bayes_regression", "auto_normal", data=small_data(), seed=3, device=device, **SMALL)
    second = fit("bayes_regression", "auto_normal", data=small_data(), seed=3, device=device, **SMALL)
    other = fit("bayes_regression", "auto_normal", data=small_data(), seed=4, device=device, **SMALL)
    assert np.array_equal(first.losses, second.losses)
    assert not np.array_equal(first.losses, other.losses)


def test_two_fits_share_no_parameter(device):
    first = fit("bayes_regression", "mean_field", data=small_data(), seed=0, device=device, **SMALL)
    before = {k: v.clone() for k, v in first.parameters().items()}
    second = fit("bayes_regression", "mean_field", data=small_data(), seed=1, device=device, **SMALL)
    after = first.parameters()
    assert set(before) == set(after) == set(second.parameters())
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not torch.equal(after["bayes_regression.weight_loc"], second.parameters()["bayes_regression.weight_loc"])
    assert len(pyro.get_param_store().keys()) == 0  # nothing leaked into the global store


def test_minibatches_and_vectorised_particles_run(device):
    result = fit("bayes_regression", "mean_field", data=small_data(), batch_size=32, num_particles=4,
                 device=device, **SMALL)
    assert result.losses.shape == (40,) and np.isfinite(result.losses).all()


@pytest.mark.parametrize("elbo", ["trace", "meanfield", "tracegraph", "renyi", "jit", "jit_meanfield"])
def test_every_elbo_fits(elbo, device):
    result = fit("bayes_regression", "auto_normal", data=small_data(), elbo=elbo, device=device, **SMALL)
    assert np.isfinite(result.losses).all()
    assert result.losses[-5:].mean() < result.losses[:5].mean()


def test_restarts_keep_the_start_with_the_best_pilot(device, monkeypatch):
    """Three starts whose pilot losses are known: the fit continues the best one, not the first or last."""
    from pyro_vi_zoo.engine import fit as engine_fit

    scores = iter([5.0, 1.0, 3.0])
    chosen = []
    real_run_steps = engine_fit.run_steps

    def run_steps(step, num_steps, losses, start, bar=None):
        real_run_steps(step, num_steps, losses, start, bar)
        if start == 0:
            step.pilot_score = next(scores)
            losses[:num_steps] = step.pilot_score
        else:
            chosen.append(step.pilot_score)

    monkeypatch.setattr(engine_fit, "run_steps", run_steps)
    result = fit("bayes_regression", "auto_normal", data=small_data(), restarts=3, device=device, **SMALL)
    assert chosen == [1.0]
    assert result.losses.shape == (40,) and np.all(result.losses[:4] == 1.0)


def exploding_model(x, y=None):
    scale = pyro.sample("scale", dist.Normal(x.new_zeros(()), 1.0))
    with pyro.plate("data", len(x)):
        pyro.sample("y", dist.Normal(x * scale.exp() ** 200, 1.0), obs=y)


def exploding_guide(x, y=None):
    loc = pyro.param("loc", lambda: x.new_tensor(0.0))
    pyro.sample("scale", dist.Normal(loc, 1.0))


def test_a_non_finite_loss_stops_with_the_step_and_a_hint(device):
    data = (torch.ones(5), torch.ones(5))
    with pytest.raises(DivergenceError, match=r"at step \d+; try a smaller --lr") as error:
        fit(exploding_model, exploding_guide, data=data, steps=30, lr=1.0, log_every=5, device=device, progress=False)
    assert 0 <= error.value.step < 30


@pytest.mark.parametrize(
    "change, message",
    [
        ({"steps": 0}, "steps must be a positive integer"),
        ({"lr": -1.0}, "lr must be positive"),
        ({"lr_decay": 0.0}, "lr_decay must lie in"),
        ({"num_particles": 0}, "num_particles must be at least 1"),
        ({"elbo": "nope"}, "unknown elbo 'nope'; choose one of: trace"),
        ({"optimizer": "sgd"}, "unknown optimizer 'sgd'"),
        ({"warp": 9}, "unknown fit setting"),
    ],
)
def test_bad_settings_name_the_problem(change, message):
    with pytest.raises(ZooError, match=message):
        resolve_settings({}, FitSettings(), change)


def test_explicit_settings_beat_family_defaults_even_when_they_equal_the_global_ones(device):
    """FitSettings(steps=1500, lr=0.05, num_particles=1) are the global defaults' values; on
    bayes_regression (family defaults 2000, 0.1, 8) they must still be what runs."""
    explicit = FitSettings(steps=1500, lr=0.05, num_particles=1)
    family = get_family("bayes_regression")
    resolved = resolve_settings(family.settings, explicit)
    assert (resolved.steps, resolved.lr, resolved.num_particles) == (1500, 0.05, 1)
    assert resolved.lr_decay == family.settings["lr_decay"]  # not chosen: the family's default
    assert resolve_settings(family.settings, explicit, {"steps": 7}).steps == 7  # keywords beat settings
    result = fit("bayes_regression", "mean_field", data=small_data(), settings=FitSettings(steps=15, lr=0.05),
                 device=device, progress=False)
    assert len(result.losses) == 15 and result.settings.lr == 0.05 and result.settings.num_particles == 8


def test_a_seeded_fit_leaves_the_callers_random_state_alone(device):
    torch.manual_seed(123)
    np.random.seed(123)
    expected_torch, expected_numpy = torch.rand(3), np.random.rand(3)
    torch.manual_seed(123)
    np.random.seed(123)
    fit("bayes_regression", "auto_normal", data=small_data(), seed=7, device=device, **SMALL)
    assert torch.equal(torch.rand(3), expected_torch)
    assert np.array_equal(np.random.rand(3), expected_numpy)


def test_an_unseeded_fit_draws_from_the_callers_stream(device):
    pyro.set_rng_seed(11)
    first = fit("bayes_regression", "auto_normal", data=small_data(), device=device, **SMALL)
    pyro.set_rng_seed(11)
    second = fit("bayes_regression", "auto_normal", data=small_data(), device=device, **SMALL)
    assert np.array_equal(first.losses, second.losses)


def test_unknown_model_and_guide_list_the_valid_ones():
    with pytest.raises(ZooError, match="unknown model 'nope'; choose one of: .*bayes_regression"):
        fit("nope")
    with pytest.raises(ZooError, match="unknown guide 'nope' for bayes_regression; choose from: mean_field, auto_normal"):
        fit("bayes_regression", "nope", data=small_data(), **SMALL)


def test_cuda_asked_for_without_cuda_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("CUDA is present here")
    with pytest.raises(ZooError, match="CUDA is not available.*--device cpu"):
        resolve_device("cuda")
    assert resolve_device("auto") == torch.device("cpu")


@pytest.mark.parametrize("name", ["cpu", "auto", "cuda", "cuda:1"])
def test_device_names_are_accepted_or_refused_with_the_choices(name):
    from pyro_vi_zoo.devices import device_name

    assert device_name(name) == name
    with pytest.raises(ZooError, match="unknown device 'gpu'; choose auto"):
        device_name("gpu")


def same_device(a, b) -> bool:
    """Equal devices, with ``cuda`` meaning the current CUDA device."""
    a, b = torch.device(a), torch.device(b)
    index = lambda d: d.index if d.index is not None else (torch.cuda.current_device() if d.type == "cuda" else None)
    return a.type == b.type and index(a) == index(b)


def test_fit_runs_on_the_requested_device(device):
    result = fit("bayes_regression", "auto_mvn", data=small_data(), device=device, **SMALL)
    assert same_device(result.device, device)
    draws = result.sample_posterior(10)
    assert all(same_device(value.device, device) for value in draws.values())


def test_package_fit_is_the_function_and_the_cli_lives_in_its_own_module():
    import types

    import pyro_vi_zoo
    import pyro_vi_zoo.cli
    import pyro_vi_zoo.runner  # noqa: F401  (a submodule import must not shadow the functions)

    assert isinstance(pyro_vi_zoo.fit, types.FunctionType) and isinstance(pyro_vi_zoo.compare, types.FunctionType)
    assert isinstance(pyro_vi_zoo.cli, types.ModuleType)
    assert type(sys.modules["pyro_vi_zoo.cli"]) is types.ModuleType  # no module-class tricks
    result = pyro_vi_zoo.fit("bayes_regression", "auto_normal", data=small_data(), steps=5, progress=False)
    assert result.losses.shape == (5,)
    import pyro_vi_zoo.fit  # the command line's module takes the attribute's place, and is the function too

    assert inspect.signature(pyro_vi_zoo.fit) == inspect.signature(pyro_vi_zoo.runner.fit)
    result = pyro_vi_zoo.fit("bayes_regression", "auto_normal", data=small_data(), steps=3, progress=False)
    assert result.losses.shape == (3,)


def test_api_misuse_is_one_clear_line():
    result = fit("bayes_regression", "auto_normal", data=small_data(), steps=5, progress=False)
    assert set(result.sample_posterior(4, "weight")) == {"weight"}  # one site by name
    with pytest.raises(ZooError, match="no latent site named 'y' in bayes_regression; its latent sites are: weight"):
        result.sample_posterior(4, ["y"])
    with pytest.raises(ZooError, match="num_samples must be at least 1, got 0"):
        result.sample_posterior(0)
    with pytest.raises(ZooError, match="'mle' is a baseline row of bnn_regression, not a guide: compare runs it"):
        fit("bnn_regression", "mle", fast=True)
    with pytest.raises(ZooError, match=r"'vae' trains by epochs of minibatches \(epochs=1\) and needs a batch size"):
        fit("vae", fast=True, batch_size=None)
    from pyro_vi_zoo.engine.distributed import World

    with pytest.raises(ZooError, match=r"global batch of 101 rows \(--batch-size 200 capped at the 101 training rows\) "
                                       "does not split evenly over 2 processes; .* multiple of 2 and at most 101"):
        World(rank=0, size=2).share(101, 200)


def test_import_is_lazy():
    """``import pyro_vi_zoo`` imports no family, scipy, matplotlib, tqdm or pandas, nor any module ``import pyro``
    does not (bar the package's own and the standard library's): what makes the import cheap, checked without
    a clock."""
    code = ("import sys; before = set(sys.modules); import {0}; "
            "print(sorted(m.split('.')[0] for m in set(sys.modules) - before))")
    imported = {module: set(eval(subprocess.run([sys.executable, "-c", code.format(module)], capture_output=True,
                                                text=True, check=True).stdout))
                for module in ("pyro", "pyro_vi_zoo")}
    extra = imported["pyro_vi_zoo"] - imported["pyro"] - {"pyro_vi_zoo"} - set(sys.stdlib_module_names)
    assert not imported["pyro_vi_zoo"] & {"scipy", "matplotlib", "tqdm", "pandas"} and not extra, extra
    families = subprocess.run([sys.executable, "-c", "import sys, pyro_vi_zoo; print('pyro_vi_zoo.families' in "
                               "sys.modules)"], capture_output=True, text=True, check=True).stdout.strip()
    assert families == "False"
