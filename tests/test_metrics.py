"""Each estimator in metrics.py against a case with a known answer."""

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer.importance import psis_diagnostic, vectorized_importance_weights

from pyro_vi_zoo.scoring import metrics


def test_log_predictive_density_of_identical_draws_is_the_log_likelihood():
    log_lik = torch.log(torch.tensor([[0.2, 0.5], [0.2, 0.5], [0.2, 0.5]]))
    assert metrics.log_predictive_density(log_lik) == pytest.approx(0.5 * (math.log(0.2) + math.log(0.5)))


def test_log_predictive_density_averages_densities_not_log_densities():
    log_lik = torch.log(torch.tensor([[0.1], [0.3]]))
    assert metrics.log_predictive_density(log_lik) == pytest.approx(math.log(0.2))


def test_rmse():
    assert metrics.rmse(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 4.0])) == pytest.approx(math.sqrt(2.0))


def test_interval_coverage_of_the_true_predictive_is_nominal():
    torch.manual_seed(0)
    draws = torch.randn(4000, 1).expand(4000, 5000)
    targets = torch.randn(5000)
    coverage, width = metrics.interval_coverage(draws, targets, 0.9)
    assert abs(coverage - 0.9) < 0.015
    assert width == pytest.approx(2 * 1.6449, rel=0.05)


def test_gaussian_kl_matches_torch():
    torch.manual_seed(1)
    a, b = torch.randn(3, 3, dtype=torch.float64), torch.randn(3, 3, dtype=torch.float64)
    cov_q, cov_p = a @ a.T + torch.eye(3), b @ b.T + 0.5 * torch.eye(3)
    loc_q, loc_p = torch.randn(3, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
    expected = torch.distributions.kl_divergence(
        torch.distributions.MultivariateNormal(loc_q, cov_q), torch.distributions.MultivariateNormal(loc_p, cov_p)
    )
    assert metrics.gaussian_kl(loc_q, cov_q, loc_p, cov_p) == pytest.approx(float(expected), rel=1e-9)
    assert metrics.gaussian_kl(loc_p, cov_p, loc_p, cov_p) == pytest.approx(0.0, abs=1e-9)


def test_reference_distances_of_known_shifts_and_scales():
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(20000, 2)) * [1.0, 3.0]
    same = metrics.reference_distances(rng.normal(size=(20000, 2)) * [1.0, 3.0], reference)
    assert same["w1_sd"] < 0.03 and same["mean_error_sd"] < 0.03
    assert same["std_ratio"] == pytest.approx(1.0, abs=0.02) and same["corr_error"] < 0.03
    shifted = metrics.reference_distances(reference + reference.std(0), reference)
    assert shifted["mean_error_sd"] == pytest.approx(1.0, abs=1e-9)
    assert shifted["w1_sd"] == pytest.approx(1.0, abs=1e-9)
    narrow = metrics.reference_distances(reference * 0.5, reference)
    assert narrow["std_ratio"] == pytest.approx(0.5, abs=1e-9)
    correlated = reference[:, :1] @ np.ones((1, 2))
    assert metrics.reference_distances(correlated, reference)["corr_error"] == pytest.approx(1.0, abs=0.03)


def test_flatten_samples_labels_coordinates():
    values, labels = metrics.flatten_samples({"w": torch.zeros(4, 2), "b": torch.ones(4)}, ["w", "b"])
    assert values.shape == (4, 3) and labels == ["w[0]", "w[1]", "b"]


# PSIS on a conjugate model: z ~ N(0, 1), x_i ~ N(z, 1): the posterior is N(Σx/(n+1), 1/(n+1)).
DATA = torch.tensor([0.3, -0.5, 1.2, 0.8, 0.1], dtype=torch.float64)
POST_LOC, POST_SCALE = float(DATA.sum() / 6), 1 / math.sqrt(6)


def conjugate_model(data):
    z = pyro.sample("z", dist.Normal(data.new_zeros(()), 1.0))
    with pyro.plate("data", len(data)):
        pyro.sample("x", dist.Normal(z, 1.0), obs=data)


def scaled_guide(factor):
    def guide(data):
        pyro.sample("z", dist.Normal(data.new_tensor(POST_LOC), POST_SCALE * factor))

    return guide


def log_weights(factor, num=4000):
    weights, _, _ = vectorized_importance_weights(
        conjugate_model, scaled_guide(factor), DATA, num_samples=num, max_plate_nesting=1, normalized=False
    )
    return weights


def test_pareto_khat_is_small_when_q_is_the_posterior_and_large_when_q_is_too_narrow(device):
    pyro.set_rng_seed(0)
    assert metrics.pareto_khat(log_weights(1.0).to(device)) < 0.5  # weights on any device
    assert metrics.pareto_khat(log_weights(1.3)) < 0.5
    assert metrics.pareto_khat(log_weights(0.3)) > 0.7


def test_non_finite_weights_are_counted_and_make_khat_infinite(device):
    pyro.set_rng_seed(0)
    clean = log_weights(1.3).to(device)
    weights = clean.clone()
    weights[[3, 7]] = float("nan")
    weights[11] = float("inf")
    weights[12] = float("-inf")  # a zero weight: allowed
    assert metrics.count_nonfinite(weights) == 3
    assert metrics.pareto_khat(weights) == float("inf")
    weights[[3, 7, 11]] = clean[[3, 7, 11]]
    assert metrics.count_nonfinite(weights) == 0 and metrics.pareto_khat(weights) < 0.5


def test_pareto_khat_agrees_with_pyros_psis_diagnostic():
    pyro.set_rng_seed(0)
    ours = metrics.pareto_khat(log_weights(0.4, num=20000))
    pyro.set_rng_seed(0)
    theirs = psis_diagnostic(conjugate_model, scaled_guide(0.4), DATA, num_particles=20000, max_plate_nesting=1)
    assert ours == pytest.approx(theirs, abs=0.1)


def test_elbo_from_log_weights_of_the_exact_posterior_is_the_log_evidence():
    pyro.set_rng_seed(0)
    evidence = torch.distributions.MultivariateNormal(torch.zeros(5, dtype=torch.float64),
                                                      torch.eye(5, dtype=torch.float64) + 1.0).log_prob(DATA)
    assert metrics.elbo_from_log_weights(log_weights(1.0, num=100)) == pytest.approx(float(evidence), abs=1e-9)


@pytest.mark.parametrize("tail", [0.2, 0.8])
def test_pareto_khat_finds_a_known_tail_index(tail):
    """Weights drawn from a generalised Pareto with shape k: k̂ estimates k (sd about 0.05-0.1 at 20 000)."""
    uniform = torch.rand(20000, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    weights = (uniform.pow(-tail) - 1) / tail  # the inverse CDF of GPD(shape=k, scale=1)
    assert metrics.pareto_khat(weights.log()) == pytest.approx(tail, abs=0.2)


def test_khat_is_infinite_for_weights_past_floats_range_and_minus_infinite_for_rounding_noise():
    """Log-weights with sd 1000 (a guide far off) underflow in the tail: k̂ is far above 0.7 (ArviZ gives 60-150),
    not NaN. A guide equal to the posterior has log-weights equal up to float32 rounding of log p and log q
    (sd 2e-4 around 2072, as Laplace's on the regression): bounded weights, −inf, not a tail index fitted to
    rounding noise."""
    generator = torch.Generator().manual_seed(0)
    assert metrics.pareto_khat(1000.0 * torch.randn(1000, generator=generator, dtype=torch.float64)) == math.inf
    rounding = 2072.0 + 2.2e-4 * torch.randn(1000, generator=generator)
    assert metrics.pareto_khat(rounding) == float("-inf")
    assert 0.0 < metrics.pareto_khat(torch.randn(1000, generator=generator, dtype=torch.float64)) < 0.7


@pytest.mark.parametrize("columns", ["plate", "event"])
def test_test_lpd_scores_a_rows_columns_jointly_however_the_model_declares_them(columns):
    """mu ~ q = N(0, 1), y_ij ~ N(mu, 1), two columns per row: the predictive of a row is the bivariate Normal
    with variances 2 and covariance 1, whose log density is not the sum of its marginals.
    Columns in a plate and columns as an event score the same: the joint."""
    from pyro_vi_zoo.engine import FitResult, FitSettings
    from pyro_vi_zoo.scoring.predictive import heldout_scores

    def model(x, y=None):
        mu = pyro.sample("mu", dist.Normal(x.new_zeros(()), 10.0))
        if columns == "plate":
            with pyro.plate("rows", x.shape[0], dim=-2), pyro.plate("columns", 2, dim=-1):
                pyro.sample("y", dist.Normal(mu, 1.0), obs=y)
        else:
            with pyro.plate("rows", x.shape[0], dim=-1):
                pyro.sample("y", dist.Normal(mu.unsqueeze(-1).expand(mu.shape + (2,)), 1.0).to_event(1), obs=y)

    def guide(x, y=None):
        pyro.sample("mu", dist.Normal(x.new_zeros(()), 1.0))

    joint = dist.MultivariateNormal(torch.zeros(2, dtype=torch.float64),
                                    torch.tensor([[2.0, 1.0], [1.0, 2.0]], dtype=torch.float64))
    y = joint.sample((30,))
    x = torch.zeros(30, 1, dtype=torch.float64)
    result = FitResult("user", "fixed", model, guide, (x, y), np.zeros(1), 0.0, y.device, FitSettings(),
                       max_plate_nesting=2 if columns == "plate" else 1)
    pyro.set_rng_seed(0)
    scores = heldout_scores(result, (x, y), num_samples=100_000)
    exact = float(joint.log_prob(y).mean())
    marginals = float(dist.Normal(0.0, math.sqrt(2.0)).log_prob(y).sum(-1).mean())
    assert abs(exact - marginals) > 0.05
    assert scores["test_lpd"] == pytest.approx(exact, abs=0.01)


def test_heldout_scores_in_original_units_against_the_closed_form():
    """A guide q(mu) = N(0.3, 0.8²) for y ~ N(mu, 1): the predictive is N(0.3, 1.64), in units of ``scale``."""
    from pyro_vi_zoo.engine import FitResult, FitSettings
    from pyro_vi_zoo.scoring.predictive import heldout_scores

    def model(y):
        mu = pyro.sample("mu", dist.Normal(y.new_zeros(()), 1.0))
        with pyro.plate("data", y.shape[0]):
            pyro.sample("y", dist.Normal(mu, 1.0), obs=y)

    def guide(y):
        pyro.sample("mu", dist.Normal(y.new_full((), 0.3), 0.8))

    y = torch.linspace(-3.0, 3.0, 41, dtype=torch.float64)
    result = FitResult("normal", "fixed", model, guide, (y,), np.zeros(1), 0.0, y.device, FitSettings())
    pyro.set_rng_seed(0)
    scores = heldout_scores(result, (y,), num_samples=200_000, scale=3.0)
    predictive = dist.Normal(0.3, math.sqrt(1.64))
    assert scores["test_lpd"] == pytest.approx(float(predictive.log_prob(y).mean()) - math.log(3.0), abs=0.005)
    assert scores["rmse"] == pytest.approx(3.0 * float((y - 0.3).pow(2).mean().sqrt()), abs=0.01)
    half_width = 1.6449 * math.sqrt(1.64)
    assert scores["width_90"] == pytest.approx(3.0 * 2 * half_width, rel=0.01)
    assert scores["coverage_90"] == pytest.approx(float(((y - 0.3).abs() < half_width).double().mean()), abs=0.03)


def test_the_exact_regression_posterior_is_the_textbook_one():
    """Against scipy-free numpy: the posterior of a Gaussian prior times a Gaussian likelihood, and the
    evidence as the marginal Normal of y (prior covariance s² X Xᵀ + σ² I)."""
    from pyro_vi_zoo.scoring.references import linear_regression_posterior

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(25, 2)), rng.normal(size=25)
    loc, cov, log_evidence = linear_regression_posterior(torch.tensor(x), torch.tensor(y), 2.0, 0.5)
    design = np.column_stack([x, np.ones(25)])
    expected_cov = np.linalg.inv(design.T @ design / 0.25 + np.eye(3) / 4.0)
    np.testing.assert_allclose(cov.numpy(), expected_cov, rtol=1e-10)
    np.testing.assert_allclose(loc.numpy(), expected_cov @ design.T @ y / 0.25, rtol=1e-10)
    marginal = 4.0 * design @ design.T + 0.25 * np.eye(25)
    _, logdet = np.linalg.slogdet(marginal)
    expected = -0.5 * (y @ np.linalg.solve(marginal, y) + logdet + 25 * math.log(2 * math.pi))
    assert float(log_evidence) == pytest.approx(expected, rel=1e-10)
