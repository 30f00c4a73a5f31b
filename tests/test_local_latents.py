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


class LinearEncoder(torch.nn.Module):
    """q(z | x) = N(A x + c, diag(s²)): holds the exact posterior when the posterior covariance is diagonal."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(OBSERVED, LATENT, dtype=torch.float64)
        self.log_scale = torch.nn.Parameter(torch.zeros(LATENT, dtype=torch.float64))


def ppca_family(weight, bias, x):
    """A family written against the public interface: PPCA with known W, an amortised encoder, epochs."""
    from pyro_vi_zoo.family import Family, Setup

    def model(x, num_examples=None, subsample=None):
        with pyro.plate("data", num_examples or x.shape[0], subsample=subsample):
            z = pyro.sample("z", dist.Normal(x.new_zeros(LATENT), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ weight.T + bias, NOISE).to_event(1), obs=x)

    def setup(dataset):
        encoder = LinearEncoder().to(dataset.device)

        def guide(x, num_examples=None, subsample=None):
            pyro.module("encoder", encoder)
            with pyro.plate("data", num_examples or x.shape[0], subsample=subsample):
                pyro.sample("z", dist.Normal(encoder.linear(x), encoder.log_scale.exp()).to_event(1))

        train = dataset.train[0]
        return Setup(model=model, guides={"encoder": lambda: guide}, batch_keyword=None,
                     make_batch=lambda rows: ((train[rows],), {"num_examples": len(train), "subsample": rows}))

    load = lambda data=None: Dataset("ppca", train=(x[:32],), test=(x[32:],))
    return Family("ppca", "probabilistic PCA with a known loading matrix", load, setup, guides=("encoder",),
                  scoring=LocalLatentScoring(), settings={"batch_size": 8, "epochs": 300, "lr": 0.05, "lr_decay": 0.02, "num_particles": 4})


def test_epochs_fit_an_amortised_guide_to_the_exact_posterior(problem, device):
    """W is orthogonalised so that the exact posterior has a diagonal covariance the encoder can hold:
    after training by minibatch epochs the test ELBO meets the exact log-likelihood."""
    weight, bias, x, _ = problem
    weight = torch.linalg.qr(weight)[0] * torch.tensor([2.0, 1.0], dtype=weight.dtype, device=weight.device)
    covariance = weight @ weight.T + NOISE**2 * torch.eye(OBSERVED, dtype=weight.dtype, device=weight.device)
    exact = dist.MultivariateNormal(bias, covariance).log_prob(x[32:]).mean()
    import pyro_vi_zoo as zoo

    comparison = zoo.compare(ppca_family(weight, bias, x), seed=0, progress=False, num_is_samples=200,
                             draw_figures=False)
    row = comparison.table.iloc[0]
    assert row["status"] == "ok" and row["steps"] == 300 * 4  # 32 rows in batches of 8
    assert row["test_elbo"] == pytest.approx(float(exact), abs=0.01)
    assert row["test_log_likelihood"] == pytest.approx(float(exact), abs=0.005)


def test_explicit_steps_beat_the_family_default_epochs_and_both_are_refused(problem):
    weight, bias, x, _ = problem
    import pyro_vi_zoo as zoo
    from pyro_vi_zoo.errors import ZooError

    result = zoo.fit(ppca_family(weight, bias, x), steps=7, seed=0, progress=False)
    assert len(result.losses) == 7 and result.settings.epochs is None
    result = zoo.fit(ppca_family(weight, bias, x), epochs=2, seed=0, progress=False)
    assert len(result.losses) == 2 * 4
    with pytest.raises(ZooError, match="give steps or epochs, not both"):
        zoo.fit(ppca_family(weight, bias, x), steps=7, epochs=2, progress=False)
