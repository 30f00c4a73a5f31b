"""The ``vae`` family: every row through ``compare`` and the command line with tiny settings, the amortisation
gap against a case with a known answer, active units, dynamic binarisation, test limits, gradient variance,
clear errors, and the notebook in its fast mode."""

import dataclasses
import functools
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyro
import pyro.distributions as dist
import pytest
import torch
from matplotlib.figure import Figure

import pyro_vi_zoo as zoo
from pyro_vi_zoo import registry
from pyro_vi_zoo.cli import main
from pyro_vi_zoo.engine.step import ELBOS
from pyro_vi_zoo.errors import ZooError
from pyro_vi_zoo.families import vae as family
from pyro_vi_zoo.guides.vae import Encoder, vae_mean_field_guide
from pyro_vi_zoo.models.vae import Decoder, vae
from pyro_vi_zoo.scoring.local_latents import local_bounds

NOTEBOOK = Path(__file__).parent.parent / "notebooks" / "vae.ipynb"
TINY_DATA = {"train_limit": 200, "test_limit": 20}
TINY_MODEL = {"latent_dim": 2, "hidden": "16"}
TINY_FLAGS = ["--train-limit", "200", "--test-limit", "20", "--latent-dim", "2", "--hidden", "16",
              "--is-samples", "20"]
ROWS = ["mean_field", "auto_normal", "iaf", "iwae_5", "iwae_50"]
FIGURES = ("reconstructions", "prior_samples", "latent_space", "training_curves")
#: the family with shorter free fits (each step costs milliseconds of Pyro overhead, whatever the size)
QUICK_FAMILY = dataclasses.replace(family.FAMILY, scoring=dataclasses.replace(
    family.FAMILY.scoring, free_fit_steps=40, prior_fit_steps=80, gap_samples=50, moment_samples=100))


@pytest.fixture(autouse=True)
def vae_is_registered(monkeypatch):
    """The command line finds the family before and after registry.py names it."""
    monkeypatch.setitem(registry.FAMILY_MODULES, "vae", "pyro_vi_zoo.families.vae")


def tiny_comparison(device, **overrides):
    options = dict(data_options=TINY_DATA, model_options=TINY_MODEL, fast=True, seed=0, progress=False,
                   device=device, num_is_samples=20)
    return zoo.compare(QUICK_FAMILY, **{**options, **overrides})


def test_compare_fits_and_scores_every_row(device):
    comparison = tiny_comparison(device)
    table = comparison.table.set_index("guide")
    assert list(table.index) == ROWS and (table["status"] == "ok").all()
    assert (table["steps"] == 4).all() and (table["batch_size"] == 50).all()  # 1 epoch of 200 images in 50s
    assert table.loc["iwae_5", "elbo_kind"] == table.loc["iwae_50", "elbo_kind"] == "iwae"
    assert list(table.loc[["iwae_5", "iwae_50", "mean_field"], "num_particles"]) == [5, 50, 1]
    assert (table["num_test"] == 20).all() and (table["is_samples"] == 20).all()
    np.testing.assert_allclose(table["test_nll"], -table["test_log_likelihood"])
    assert (table["test_nll"] > 0).all() and (table["test_nll_se"] > 0).all()
    # the importance-sampled log p(x) is never below the ELBO of the same draws
    assert (table["test_log_likelihood"] >= table["test_elbo"] - 1e-9).all()
    assert (table["test_scores_from"] == "encoder q(z|x)").sum() == 4
    assert table.loc["auto_normal", "test_scores_from"].startswith("free Normal per test image")
    assert math.isnan(table.loc["auto_normal", "amortization_gap"])
    amortised = table.drop(index="auto_normal")
    # free Normals started at the encoder's q only improve on it (up to Monte Carlo error)
    assert (amortised["amortization_gap"] > -0.5).all(), amortised["amortization_gap"]
    assert table["active_units"].between(0, 2).all() and (table["latent_dim"] == 2).all()
    assert (table["images_per_s"] > 0).all() and (table["epochs"] == 1).all()
    assert set(FIGURES) <= set(comparison.figures)
    assert all(isinstance(comparison.figures[name], Figure) for name in FIGURES)
    assert comparison.draws["iaf"]["z_mean"].shape == (20, 2)


def test_trace_mean_field_elbo_trains_every_kind_of_guide(device):
    """--elbo meanfield: a closed-form KL for the Normal guides, a one-draw estimate for the flow."""
    comparison = tiny_comparison(device, guides=["mean_field", "auto_normal", "iaf"], elbo="meanfield",
                                 draw_figures=False)
    table = comparison.table
    assert (table["status"] == "ok").all() and (table["elbo_kind"] == "meanfield").all()
    assert np.isfinite(table["test_nll"]).all() and np.isfinite(table["train_bound"]).all()


def test_comparisons_of_two_architectures_in_one_process_leave_the_param_store_alone(device):
    for latent_dim in (2, 3):
        comparison = tiny_comparison(device, guides=["mean_field"], model_options={"latent_dim": latent_dim,
                                                                                    "hidden": "16"},
                                     draw_figures=False)
        assert comparison.table.loc[0, "status"] == "ok" and comparison.table.loc[0, "latent_dim"] == latent_dim
    assert not list(pyro.get_param_store().keys())


def test_rows_train_decoders_of_their_own(device):
    comparison = tiny_comparison(device, guides=["mean_field", "iwae_5"])
    first, second = (family.decoder_of(comparison.fits[name]) for name in ("mean_field", "iwae_5"))
    assert not torch.equal(first.logits.weight, second.logits.weight)
    refit = tiny_comparison(device, guides=["mean_field"])
    assert torch.equal(family.decoder_of(refit.fits["mean_field"]).logits.weight, first.logits.weight)  # seeded


def test_command_line_writes_the_table_and_figures(tmp_path, device, capsys, monkeypatch):
    monkeypatch.setattr(family, "FAMILY", QUICK_FAMILY)
    status = main(["vae", "--fast", *TINY_FLAGS, "--out", str(tmp_path), "--no-progress", "--device", device,
                   "--guide", "mean_field", "--guide", "auto_normal", "--activation", "relu",
                   "--binarization", "fixed", "--dataset", "synthetic"])
    assert status == 0, capsys.readouterr().err
    (run_dir,) = (tmp_path / "vae").iterdir()
    table = pd.read_csv(run_dir / "results.csv")
    assert list(table["guide"]) == ["mean_field", "auto_normal"] and (table["status"] == "ok").all()
    assert (table["activation"] == "relu").all() and (table["binarization"] == "fixed").all()
    assert (table["num_train"] == 200).all() and (table["latent_dim"] == 2).all()
    for name in FIGURES + ("elbo_traces",):
        assert (run_dir / f"{name}.png").stat().st_size > 1000
    assert "test_nll" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--hidden", "wide"], "--hidden must be comma-separated positive layer widths"),
    (["--latent-dim", "0"], "--latent-dim must be a positive integer"),
    (["--test-limit", "0"], "--test-limit must be a positive number of images"),
    (["--activation", "sigmoid"], "unknown --activation 'sigmoid'; choose one of: tanh, relu"),
    (["--binarization", "sometimes"], "unknown binarization 'sometimes'"),
    (["--dataset", "cifar"], "unknown --dataset 'cifar' for vae"),
    (["--dataset", "mnist", "--data-dir", "/no/such/folder"], "missing folder /no/such/folder"),
    (["--dataset", "binarized-mnist", "--binarization", "dynamic"], "binarization is 'fixed'"),
    (["--data-dir", "/tmp"], "synthetic images are made in code and read no files"),
    (["--guide", "auto_mvn"], "fits Pyro's AutoNormal as its own row 'auto_normal'"),
    (["--epochs", "2", "--batch-size", "0"], "batch_size must be positive"),
])
def test_bad_options_exit_2_with_one_clear_line(argv, message, tmp_path, capsys):
    assert main(["vae", "--fast", *TINY_FLAGS, *argv, "--out", str(tmp_path), "--no-progress"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and re.search(re.escape(message), error), error


# ----------------------------------------------------------------------------- the amortisation gap


def z_blind_decoder(latent_dim, device):
    """A decoder whose logits do not depend on z: the exact posterior is the prior, and
    log p(x) = sum of Bernoulli log-probabilities at the output bias."""
    torch.manual_seed(0)
    decoder = Decoder(latent_dim, (8,)).to(device)
    with torch.no_grad():
        decoder.logits.weight.zero_()
    return decoder.requires_grad_(False).eval()


def test_free_fit_reaches_the_exact_posterior_and_the_gap_is_the_encoders_kl(device):
    latent_dim, count = 3, 12
    decoder = z_blind_decoder(latent_dim, device)
    x = torch.bernoulli(torch.full((count, 784), 0.3, device=device))
    exact = dist.Bernoulli(logits=decoder.logits.bias).log_prob(x).sum(-1).double().cpu()
    # an encoder wider than the posterior, so that its importance weights have a finite variance
    loc, scale = torch.ones(count, latent_dim, device=device), torch.full((count, latent_dim), 1.5, device=device)
    encoder_kl = 0.5 * latent_dim * (1.0 + 2.25 - 1.0 - math.log(2.25))  # KL(N(1, 1.5²) ‖ N(0, 1)) per image

    def bad_encoder(images):
        with pyro.plate("data", images.shape[0], dim=-1):
            pyro.sample("z", dist.Normal(loc[:len(images)], scale[:len(images)]).to_event(1))

    model = functools.partial(vae, decoder=decoder, latent_dim=latent_dim)
    with torch.no_grad():
        encoder_bounds = local_bounds(model, bad_encoder, (x,), num_samples=2000)
    # log p(x, z) − log q(z) = log p(x) + log p(z)/q(z): the estimate is exact up to the error of mean p(z)/q(z)
    torch.testing.assert_close(encoder_bounds.log_likelihood, exact, rtol=0, atol=0.1)
    free = family.fit_free_normals(decoder, latent_dim, x, loc, scale, steps=300, lr=0.05, seed=0)
    torch.testing.assert_close(free.guide.loc, torch.zeros_like(loc), rtol=0, atol=0.05)
    torch.testing.assert_close(free.guide.scale, torch.ones_like(scale), rtol=0, atol=0.05)
    with free.activate(), torch.no_grad():
        free_bounds = local_bounds(free.model, free.guide, (x,), num_samples=2000)
    gaps = family.gap_summary(encoder_bounds.elbo, free_bounds.elbo, encoder_bounds.log_likelihood)
    assert gaps["amortization_gap"] == pytest.approx(encoder_kl, abs=0.05 * latent_dim)
    assert gaps["approximation_gap"] == pytest.approx(0.0, abs=0.01 * latent_dim)
    assert gaps["gap_examples"] == count


def test_active_units_count_dimensions_whose_posterior_mean_varies(device):
    generator = torch.Generator().manual_seed(0)
    spread = torch.tensor([0.0, 0.05, 0.08, 0.15, 1.0])  # variances 0, 0.0025, 0.0064, 0.0225, 1
    means = (torch.randn(5000, 5, generator=generator) * spread + 3.0).to(device)
    assert family.active_units(means) == 2
    assert family.active_units(means, threshold=0.005) == 3
    assert family.active_units(means[:1]) == 0


def test_latent_moments_are_the_encoders_output_for_a_normal_guide(device):
    torch.manual_seed(0)
    encoder = Encoder(2, (16,)).to(device)
    guide = functools.partial(vae_mean_field_guide, encoder=encoder, latent_dim=2)
    x = torch.bernoulli(torch.full((30, 784), 0.4, device=device))
    mean, sd = family.latent_moments(guide, x, num_samples=3, chunk_examples=7)
    loc, scale = encoder(x)
    torch.testing.assert_close(mean, loc.detach())
    torch.testing.assert_close(sd, scale.detach())


# ----------------------------------------------------------------------------- data and batches


def grey_images(count, device, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(count, 784, generator=generator).to(device)


def test_make_batch_redraws_grey_images_each_time_and_keeps_fixed_ones(device):
    images = grey_images(40, device)
    rows = torch.tensor([3, 7, 11, 19, 23], device=device)
    (first,), keywords = family.make_batch(images, True, rows)
    (second,), _ = family.make_batch(images, True, rows)
    assert set(torch.cat([first, second]).unique().tolist()) == {0.0, 1.0}
    assert not torch.equal(first, second)
    assert keywords == {"num_examples": 40, "subsample": rows}
    many = torch.stack([family.make_batch(images, True, rows)[0][0] for _ in range(400)])
    torch.testing.assert_close(many.mean(0), images[rows], rtol=0, atol=0.1)  # Bernoulli(grey) draws
    (fixed,), _ = family.make_batch(images, False, rows)
    assert torch.equal(fixed, images[rows])


def test_limits_keep_the_first_images_and_their_labels(device):
    full = family.load_data()
    limited = family.load_data(train_limit=30, test_limit=7)
    assert (full.num_train, full.num_test) == family.SYNTHETIC_SIZES
    assert (limited.num_train, limited.num_test) == (30, 7)
    assert torch.equal(limited.test[0], full.test[0][:7]) and torch.equal(limited.train[0], full.train[0][:30])
    np.testing.assert_array_equal(limited.test_labels, full.test_labels[:7])
    assert family.load_data(test_limit=10_000).num_test == full.num_test
    for bad in (0, -3, 2.5, "7", True):
        with pytest.raises(ZooError, match="--test-limit must be a positive number"):
            family.load_data(test_limit=bad)


def test_test_limit_reaches_the_scores(device):
    comparison = zoo.compare(QUICK_FAMILY, guides=["mean_field"], data_options={"train_limit": 100, "test_limit": 5},
                             model_options=TINY_MODEL, fast=True, seed=0, progress=False, device=device,
                             num_is_samples=10, draw_figures=False)
    row = comparison.table.iloc[0]
    assert row["num_test"] == 5 and row["gap_examples"] == 5 and row["test_limit"] == 5
    assert comparison.draws["mean_field"]["z_mean"].shape == (5, 2)


def test_users_arrays_and_folders(tmp_path, device):
    from test_image_data import write_mnist

    images = np.random.default_rng(0).uniform(size=(12, 28, 28))
    own = family.load_data(images)
    assert own.num_train == 12 and own.test is None and own.binarization == "dynamic"
    pair = family.load_data((images[:8], images[8:]), binarization="fixed")
    assert (pair.num_train, pair.num_test) == (8, 4) and set(pair.train[0].unique().tolist()) <= {0.0, 1.0}
    mnist = family.load_data(str(write_mnist(tmp_path / "mnist")), test_limit=3)
    assert mnist.name == "mnist" and (mnist.num_train, mnist.num_test) == (6, 3) and len(mnist.test_labels) == 3
    with pytest.raises(ZooError, match="not a folder"):
        family.load_data(str(tmp_path / "absent"))
    with pytest.raises(ZooError, match="either as data or by --dataset"):
        family.load_data(images, dataset="mnist")


# ----------------------------------------------------------------------------- the IWAE rows' objective


def test_iwae_rows_train_on_the_per_image_bound_scaled_after_the_log_mean_exp(device):
    """The IWAE rows' loss is (N / batch) Σ_i log (1/k) Σ_k w_ik on the family's minibatches."""
    comparison = tiny_comparison(device, guides=["iwae_5"], draw_figures=False)
    fit = comparison.fits["iwae_5"]
    assert (fit.settings.elbo, fit.settings.num_particles) == ("iwae", 5)
    images = comparison.dataset.train[0]
    batch, keywords = family.make_batch(images, True, torch.arange(10, 60, device=device))
    iwae = ELBOS["iwae"](num_particles=5, vectorize_particles=True, max_plate_nesting=1)
    with fit.activate(), torch.no_grad():
        pyro.set_rng_seed(1)
        loss = iwae.differentiable_loss(fit.model, fit.guide, *batch, **keywords)
        pyro.set_rng_seed(1)
        with pyro.plate("particles", 5, dim=-2):
            guide_trace = pyro.poutine.trace(fit.guide).get_trace(*batch)
            model_trace = pyro.poutine.trace(pyro.poutine.replay(fit.model, trace=guide_trace)).get_trace(*batch)
    log_weights = sum(model_trace.nodes[name]["fn"].log_prob(model_trace.nodes[name]["value"]) for name in ("z", "x"))
    log_weights = log_weights - guide_trace.nodes["z"]["fn"].log_prob(guide_trace.nodes["z"]["value"])
    bound = (torch.logsumexp(log_weights, 0) - math.log(5)).sum() * len(images) / 50
    assert float(-loss) == pytest.approx(float(bound), rel=1e-5)


# ----------------------------------------------------------------------------- gradient variance


def test_closed_form_kl_removes_the_encoders_gradient_noise_when_the_decoder_ignores_z(device):
    """With a decoder blind to z the encoder's gradient comes from KL(q ‖ p) alone: TraceMeanField_ELBO
    computes it exactly (no noise), Trace_ELBO estimates it from the draw. The decoder's gradient is the
    same estimator under both, so at the same draws its variance is the same."""
    comparison = tiny_comparison(device, guides=["mean_field"], draw_figures=False)
    fit = comparison.fits["mean_field"]
    with fit.activate(), torch.no_grad():
        pyro.param("decoder$$$logits.weight").zero_()
    images = comparison.dataset.test[0]
    table = family.elbo_gradient_variance(fit, images, num_draws=20).set_index(["elbo", "weights"])
    assert table.loc[("meanfield", "encoder"), "total_variance"] < 1e-9
    assert table.loc[("trace", "encoder"), "total_variance"] > 1e-3
    assert table.loc[("trace", "decoder"), "total_variance"] > 0
    assert table.loc[("trace", "decoder"), "total_variance"] == pytest.approx(
        table.loc[("meanfield", "decoder"), "total_variance"], rel=1e-5)


# ----------------------------------------------------------------------------- the notebook


def test_pooled_importance_estimates_weigh_each_by_its_draws(device):
    first = torch.tensor([-100.0, -50.0], dtype=torch.float64, device=device)
    second = torch.tensor([-101.0, -40.0], dtype=torch.float64, device=device)
    pooled = family.pooled_log_likelihood((first, 1000), (second, 3000))
    expected = torch.log((1000 * first.exp() + 3000 * second.exp()) / 4000)
    torch.testing.assert_close(pooled, expected, rtol=0, atol=1e-9)
    assert float(pooled[1]) > float(first[1])  # the better estimate of the second image dominates
