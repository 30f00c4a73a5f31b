"""Bayesian linear regression: the model, its guides, and posteriors against the exact answer.

The yardsticks (TyXe's habit): with known noise the posterior is Gaussian with
precision Λ = XᵀX/σ² + I/τ²; a full-covariance guide should reach it (KL → 0,
Cov·Λ ≈ I), and the mean-field optimum has the exact means and scales
1/sqrt(diag Λ), below the marginal sds when features are correlated.
"""

from dataclasses import replace

import numpy as np
import pyro
import pytest
import torch

from pyro_vi_zoo import compare, fit
from pyro_vi_zoo.data.regression import cubic_arrays, regression_dataset
from pyro_vi_zoo.engine import latent_sites
from pyro_vi_zoo.guides import bayes_regression_guide
from pyro_vi_zoo.models import bayes_regression
from pyro_vi_zoo.scoring.diagnostics import guide_gaussian
from pyro_vi_zoo.scoring.metrics import gaussian_kl
from pyro_vi_zoo.scoring.references import exact_linear_regression, linear_regression_posterior, nuts_reference

NOISE = 1.5


def small_cubic(num_points=400):
    """The cubic data on a coarser grid: a wider posterior that tests can reach quickly."""
    x, y = cubic_arrays(num_points, seed=3)
    dataset = regression_dataset(x, y, features="poly3", name="small_cubic")
    return replace(dataset, noise_scale=NOISE / dataset.target_scale)


def exact_for(dataset):
    features, y = dataset.train
    return exact_linear_regression(features, y, prior_scale=10.0, noise_scale=dataset.noise_scale)


def test_model_predicts_on_the_inputs_device_and_vectorises(device):
    features = torch.randn(20, 3, device=device)
    trace = pyro.poutine.trace(bayes_regression).get_trace(features, None, noise_scale=1.0)
    assert trace.nodes["y"]["value"].shape == (20,)
    assert all(site["value"].device == features.device for site in trace.nodes.values() if site["type"] == "sample")
    with pyro.plate("particles", 7, dim=-2):
        trace = pyro.poutine.trace(bayes_regression).get_trace(features, torch.zeros(20, device=device))
    assert trace.nodes["y"]["fn"].batch_shape == (7, 20)


def test_model_minibatch_subsamples_and_rescales(device):
    features, y = torch.randn(100, 2, device=device), torch.randn(100, device=device)
    trace = pyro.poutine.trace(bayes_regression).get_trace(features, y, noise_scale=1.0, subsample_size=10)
    assert trace.nodes["y"]["value"].shape == (10,)
    assert trace.nodes["y"]["scale"] == pytest.approx(10.0)


def test_guide_has_the_model_latent_sites_and_shapes(device):
    features, y = torch.randn(30, 4, device=device), torch.randn(30, device=device)
    for kwargs in ({"noise_scale": 1.0}, {}):
        model = pyro.poutine.trace(bayes_regression).get_trace(features, y, **kwargs)
        guide = pyro.poutine.trace(bayes_regression_guide).get_trace(features, y, **kwargs)
        latent = {n: model.nodes[n]["value"].shape for n in latent_sites(bayes_regression, (features, y), kwargs)}
        sampled = {n: s["value"].shape for n, s in guide.nodes.items() if s["type"] == "sample"}
        assert latent == sampled


def test_exact_evidence_matches_the_marginal_likelihood_by_brute_force():
    torch.manual_seed(0)
    features, y = torch.randn(25, 3, dtype=torch.float64), torch.randn(25, dtype=torch.float64)
    _, _, log_evidence = linear_regression_posterior(features, y, prior_scale=2.0, noise_scale=0.7)
    design = torch.cat([features, torch.ones(25, 1, dtype=torch.float64)], 1)
    covariance = 0.49 * torch.eye(25, dtype=torch.float64) + 4.0 * design @ design.T
    expected = torch.distributions.MultivariateNormal(torch.zeros(25, dtype=torch.float64), covariance).log_prob(y)
    assert log_evidence == pytest.approx(float(expected), abs=1e-8)


def test_auto_mvn_reaches_the_exact_posterior(device):
    """Over seeds 0-15 (CPU) the KL ranged 0.001-0.020 and the whitened covariance's largest deviation from I
    0.019-0.080, with their mean over seeds within 0.016 of I: noise, no bias, well inside the tolerances.
    (2000 steps decaying to lr × 0.002 stopped short: variances 0.86 and 1.14 of the exact on every seed.)"""
    dataset = small_cubic()
    reference = exact_for(dataset)
    result = fit("bayes_regression", "auto_mvn", data=dataset, steps=2500, lr=0.05, lr_decay=0.02,
                 num_particles=16, device=device, progress=False, seed=0)
    loc, cov = guide_gaussian(result, reference.sites)
    assert gaussian_kl(loc, cov, reference.loc, reference.cov) < 0.05
    # Cov·Λ ≈ I, checked in the whitened (symmetric) form L⁻¹ Cov L⁻ᵀ ≈ I with L Lᵀ the exact covariance
    chol_inverse = torch.linalg.inv(torch.linalg.cholesky(reference.cov))
    whitened = chol_inverse @ cov @ chol_inverse.T
    assert torch.allclose(whitened, torch.eye(4, dtype=whitened.dtype), atol=0.15)  # variances within 15%


def test_flow_guide_gets_close_to_the_exact_posterior(device):
    """On quadratic features (three correlated coefficients) over seeds 0-15 (CPU): KL 0.000-0.089, std_ratio
    0.90-1.01, correlation error at most 0.082. On the cubic features (x and x³, ρ ≈ 0.92) the flow has a
    second optimum without the correlation (KL ≈ 0.9, std_ratio ≈ 0.7) that 3 of 8 seeds end in; the README
    says so, and no tolerance would hold there for every seed."""
    x, y = cubic_arrays(400, seed=3)
    dataset = regression_dataset(x, y, features="poly2", name="small_quadratic")
    dataset = replace(dataset, noise_scale=NOISE / dataset.target_scale)
    comparison = compare("bayes_regression", ["auto_iaf"], data=dataset, steps=1500, lr=0.05, lr_decay=0.002,
                         device=device, progress=False, draw_figures=False, num_elbo_particles=4000, seed=0)
    row = comparison.table.iloc[0]
    assert row["kl_method"] == "monte_carlo"  # a flow has no closed-form Gaussian
    assert row["kl_to_exact"] < 0.2 and 0.8 < row["std_ratio"] < 1.2 and row["corr_error"] < 0.15


def test_mean_field_reaches_the_mean_field_optimum_not_the_marginals(device):
    """The Gaussian mean-field optimum has the exact means and sds 1/sqrt(Λ_ii). Over seeds 0-7 (CPU) the
    largest location error was 0.005-0.030 marginal sds (tolerance 0.06) and the sds within 1% (tolerance 10%)."""
    dataset = small_cubic()
    reference = exact_for(dataset)
    result = fit("bayes_regression", "mean_field", data=dataset, steps=3000, lr=0.05, lr_decay=0.0002,
                 num_particles=16, device=device, progress=False, seed=0)
    loc, cov = guide_gaussian(result, reference.sites)
    marginal_sd = reference.cov.diagonal().sqrt()
    optimum_sd = torch.linalg.inv(reference.cov).diagonal().rsqrt()
    assert torch.all((loc - reference.loc).abs() < 0.06 * marginal_sd)
    assert torch.allclose(cov.diagonal().sqrt(), optimum_sd, rtol=0.1)
    # the poly3 features x and x³ are correlated: mean-field under-estimates their spread
    assert torch.all(cov.diagonal().sqrt()[[0, 2]] < 0.6 * marginal_sd[[0, 2]])


def test_nuts_reference_agrees_with_the_exact_posterior(cache):
    dataset = small_cubic(120)
    features, y = dataset.train
    noise = dataset.noise_scale
    exact = exact_for(dataset)
    model = lambda features, y: bayes_regression(features, y, prior_scale=10.0, noise_scale=noise)
    nuts = nuts_reference(model, (features, y), ("weight", "bias"), {"test": 1}, num_samples=600,
                          warmup_steps=300, progress=False, directory=cache)
    draws = torch.cat([nuts.samples["weight"], nuts.samples["bias"][:, None]], 1).double()
    sd = exact.cov.diagonal().sqrt()
    assert torch.all((draws.mean(0) - exact.loc).abs() < 0.2 * sd)
    assert torch.allclose(draws.std(0), sd, rtol=0.15)
    again = nuts_reference(model, (features, y), ("weight", "bias"), {"test": 1}, num_samples=600,
                           warmup_steps=300, progress=False, directory=cache)
    assert torch.equal(again.samples["weight"], nuts.samples["weight"])  # served from the cache


@pytest.fixture(scope="module")
def default_comparison(tmp_path_factory):
    torch.set_num_threads(1)
    return compare("bayes_regression", ["mean_field", "auto_mvn", "auto_laplace", "auto_delta"],
                   out=tmp_path_factory.mktemp("runs"), progress=False, steps=1500, seed=0)


def test_predictive_coverage_of_good_guides_is_nominal(default_comparison):
    table = default_comparison.table.set_index("guide")
    for guide in ("mean_field", "auto_mvn", "auto_laplace"):
        assert 0.85 <= table.loc[guide, "coverage_90"] <= 0.95
        assert table.loc[guide, "rmse"] == pytest.approx(NOISE, rel=0.1)  # the noise floor, in original units


def test_closed_form_and_monte_carlo_kl_agree(default_comparison):
    reference = default_comparison.reference
    row = default_comparison.table.set_index("guide").loc["mean_field"]
    monte_carlo = reference.log_evidence - row["elbo"]
    assert row["kl_method"] == "closed_form"
    assert row["kl_to_exact"] == pytest.approx(monte_carlo, abs=0.1)
    assert default_comparison.table.set_index("guide").loc["auto_laplace", "kl_to_exact"] < 0.01


def test_comparison_rows_carry_their_configuration_and_files_are_written(default_comparison):
    table = default_comparison.table
    for column in ("model", "guide", "dataset", "steps", "lr", "seed", "elbo_kind", "num_particles", "noise_scale"):
        assert column in table.columns
    assert np.isnan(table.set_index("guide").loc["auto_delta", "elbo"])  # a point mass has no ELBO
    run_dir = default_comparison.run_dir
    for name in ("results.csv", "results.json", "settings.json", "elbo_traces.png", "marginals.png",
                 "predictive_band.png", "mean_band.png", "parameters/mean_field.pt"):
        assert (run_dir / name).exists(), name
    names = {f"bayes_regression.{name}" for name in ("weight_loc", "weight_scale", "bias_loc", "bias_scale")}
    assert set(torch.load(run_dir / "parameters/mean_field.pt")) == names
