"""The local-latent scorer against a model whose marginal likelihood is known: a linear Gaussian
latent-variable model (probabilistic PCA, Tipping & Bishop 1999), z ~ N(0, I), x ~ N(Wz + b, σ²I),
so that p(x) = N(b, WWᵀ + σ²I) and q(z | x) can be the exact posterior."""

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_vi_zoo.data import Dataset
from pyro_vi_zoo.engine import FitResult, resolve_settings
from pyro_vi_zoo.scoring import Budget, LocalLatentScoring
from pyro_vi_zoo.scoring.local_latents import local_bounds

LATENT, OBSERVED, NOISE = 2, 5, 0.5


@pytest.fixture
def problem(device):
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(OBSERVED, LATENT, generator=generator, dtype=torch.float64).to(device)
    bias = torch.randn(OBSERVED, generator=generator, dtype=torch.float64).to(device)
    z = torch.randn(40, LATENT, generator=generator, dtype=torch.float64).to(device)
    x = z @ weight.T + bias + NOISE * torch.randn(40, OBSERVED, generator=generator, dtype=torch.float64).to(device)
    covariance = weight @ weight.T + NOISE**2 * torch.eye(OBSERVED, dtype=torch.float64, device=device)
    exact = dist.MultivariateNormal(bias, covariance).log_prob(x).cpu()
    return weight, bias, x, exact


def make_model(weight, bias):
    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(LATENT), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ weight.T + bias, NOISE).to_event(1), obs=x)
    return model


def make_guide(weight, bias, widen=1.0):
    """q(z | x) = N(M⁻¹Wᵀ(x − b), σ²M⁻¹), M = WᵀW + σ²I: the exact posterior (``widen`` scales its sd)."""
    precision = weight.T @ weight + NOISE**2 * torch.eye(LATENT, dtype=weight.dtype, device=weight.device)
    covariance = NOISE**2 * torch.linalg.inv(precision) * widen**2

    def guide(x):
        loc = (x - bias) @ weight @ torch.linalg.inv(precision).T
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.MultivariateNormal(loc, covariance))
    return guide


def test_the_exact_posterior_gives_the_exact_marginal_likelihood_per_example(problem):
    weight, bias, x, exact = problem
    bounds = local_bounds(make_model(weight, bias), make_guide(weight, bias), (x,), num_samples=7,
                          chunk_examples=16, chunk_samples=3)
    torch.testing.assert_close(bounds.log_likelihood, exact, rtol=0, atol=1e-9)
    torch.testing.assert_close(bounds.elbo, exact, rtol=0, atol=1e-9)  # log-weights are constant: KL is 0


def test_a_wider_guide_gives_a_looser_elbo_and_an_importance_estimate_that_tightens_with_k(problem):
    weight, bias, x, exact = problem
    model, guide = make_model(weight, bias), make_guide(weight, bias, widen=1.6)
    pyro.set_rng_seed(0)
    few = local_bounds(model, guide, (x,), num_samples=2, chunk_examples=16)
    many = local_bounds(model, guide, (x,), num_samples=4000, chunk_examples=16, chunk_samples=1000)
    gap = float((exact - many.elbo).mean())
    assert gap > 0.05  # KL(q‖p) of a too-wide Gaussian, in nats per example
    # k = 4000: each example's estimate is within a few Monte Carlo errors (about 0.012 nats here), and
    # their average over 40 examples within 0.01
    assert float((exact - many.log_likelihood).abs().max()) < 0.05
    assert float((exact - many.log_likelihood).mean()) == pytest.approx(0.0, abs=0.01)
    assert float(few.log_likelihood.mean()) < float(many.log_likelihood.mean()) <= float(exact.mean()) + 0.01
    assert many.summary()["test_log_likelihood_se"] == pytest.approx(float(many.log_likelihood.std()) / np.sqrt(40))


def test_the_scorer_reports_test_bounds_of_a_fitted_result(problem):
    weight, bias, x, exact = problem
    model, guide = make_model(weight, bias), make_guide(weight, bias)
    dataset = Dataset("ppca", train=(x[:30],), test=(x[30:],))
    fit = FitResult("ppca", "exact", model, guide, dataset.train, np.zeros(3), 1.0, x.device,
                    resolve_settings({}))
    row = LocalLatentScoring().score(fit, dataset, None, (), Budget(num_is_samples=5))
    assert row["test_log_likelihood"] == pytest.approx(float(exact[30:].mean()), abs=1e-9)
    assert row["test_elbo"] == pytest.approx(row["test_log_likelihood"], abs=1e-9) and row["is_samples"] == 5
