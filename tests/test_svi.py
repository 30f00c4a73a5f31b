"""The SVI loop: reproducibility, isolation between fits, the NaN guard, settings and devices."""

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_vi_zoo import DivergenceError, FitSettings, ZooError, fit
from pyro_vi_zoo.data.regression import cubic_arrays
from pyro_vi_zoo.devices import resolve_device
from pyro_vi_zoo.registry import ModelSpec

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
    assert not torch.equal(after["weight_loc"], second.parameters()["weight_loc"])
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


def test_restarts_keep_the_best_start(device):
    result = fit("bayes_regression", "auto_normal", data=small_data(), restarts=3, device=device, **SMALL)
    assert result.losses.shape == (40,) and np.isfinite(result.losses).all()


def exploding_model(x, y=None):
    scale = pyro.sample("scale", dist.Normal(x.new_zeros(()), 1.0))
    with pyro.plate("data", len(x)):
        pyro.sample("y", dist.Normal(x * scale.exp() ** 200, 1.0), obs=y)


def exploding_guide(x, y=None):
    loc = pyro.param("loc", lambda: x.new_tensor(0.0))
    pyro.sample("scale", dist.Normal(loc, 1.0))


def test_a_non_finite_loss_stops_with_the_step_and_a_hint(device):
    from pyro_vi_zoo.data import Dataset

    spec = ModelSpec("exploding", "a model whose loss overflows", exploding_model, exploding_guide,
                     load_data=lambda data=None: Dataset("toy", (torch.ones(5), torch.ones(5))),
                     model_kwargs=lambda dataset: {}, guides=("mean_field",))
    with pytest.raises(DivergenceError, match=r"at step \d+; try a smaller --lr") as error:
        fit(spec, "mean_field", steps=30, lr=1.0, log_every=5, device=device, progress=False)
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
        FitSettings().replace(**change)


def test_unknown_model_and_guide_list_the_valid_ones():
    with pytest.raises(ZooError, match="unknown model 'nope'; choose one of: .*bayes_regression"):
        fit("nope")
    with pytest.raises(ZooError, match="unknown guide 'nope'; choose one of: mean_field, auto_normal"):
        fit("bayes_regression", "nope", data=small_data(), **SMALL)


def test_cuda_asked_for_without_cuda_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("CUDA is present here")
    with pytest.raises(ZooError, match="CUDA is not available.*--device cpu"):
        resolve_device("cuda")
    assert resolve_device("auto") == torch.device("cpu")


def test_fit_runs_on_the_requested_device(device):
    result = fit("bayes_regression", "auto_mvn", data=small_data(), device=device, **SMALL)
    assert result.device == torch.device(device)
    draws = result.sample_posterior(10)
    assert all(value.device.type == torch.device(device).type for value in draws.values())


def test_package_fit_is_callable_after_the_cli_module_is_imported():
    import pyro_vi_zoo
    import pyro_vi_zoo.fit  # noqa: F401  (rebinds the package attribute to the module)

    result = pyro_vi_zoo.fit("bayes_regression", "auto_normal", data=small_data(), steps=5, progress=False)
    assert result.losses.shape == (5,)
