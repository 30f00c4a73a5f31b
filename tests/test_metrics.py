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
