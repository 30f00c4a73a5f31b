"""Gradient estimators against known answers: sticking the landing has zero variance at the exact posterior
and is unbiased away from it; the score-function gradient is unbiased with a larger variance."""

import functools

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer.autoguide import AutoDiagonalNormal, AutoMultivariateNormal, AutoNormal

from pyro_vi_zoo import fit
from pyro_vi_zoo.data.regression import cubic_arrays
from pyro_vi_zoo.engine import ELBOS
from pyro_vi_zoo.errors import ZooError
from pyro_vi_zoo.models import bayes_regression
from pyro_vi_zoo.scoring.references import linear_regression_posterior

PRIOR, NOISE = 2.0, 0.5


@pytest.fixture
def regression(device):
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(40, 2, generator=generator, dtype=torch.float64)
    y = features @ torch.tensor([1.0, -0.5], dtype=torch.float64) + 0.3 + NOISE * torch.randn(40, generator=generator,
                                                                                             dtype=torch.float64)
    loc, cov, _ = linear_regression_posterior(features, y, PRIOR, NOISE)
    model = functools.partial(bayes_regression, prior_scale=PRIOR, noise_scale=NOISE)
    return model, features.to(device), y.to(device), loc.to(device), cov.to(device)


def guide_at(model, args, loc, cov):
    """AutoMultivariateNormal set to N(loc, cov) over (weight, bias)."""
    guide = AutoMultivariateNormal(model)
    guide(*args)
    cholesky = torch.linalg.cholesky(cov)
    with torch.no_grad():
        guide.loc.copy_(loc)
        guide.scale = cholesky.diagonal()
        guide.scale_tril = cholesky / cholesky.diagonal()[:, None]
    return guide


def gradients(elbo_name, model, guide, args, draws: int) -> torch.Tensor:
    """One gradient of the negative ELBO per draw, flattened over the guide's parameters: (draws, P)."""
    elbo = ELBOS[elbo_name](num_particles=1)
    params = list(guide.parameters())
    rows = []
    for _ in range(draws):
        loss = elbo.differentiable_loss(model, guide, *args)
        rows.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)]))
    return torch.stack(rows)


def test_stl_gradient_is_zero_at_the_exact_posterior_while_trace_elbos_is_not(regression):
    model, features, y, loc, cov = regression
    with pyro.settings.context(module_local_params=True):
        guide = guide_at(model, (features, y), loc, cov)
        pyro.set_rng_seed(0)
        stl = gradients("stl", model, guide, (features, y), draws=20)
        trace = gradients("trace", model, guide, (features, y), draws=20)
    assert float(stl.abs().max()) < 1e-8  # zero for every draw, to float64 precision
    assert float(trace.var(0).max()) > 1.0  # the score term's noise: positive variance at the optimum


def test_stl_and_score_function_are_unbiased_away_from_the_optimum(regression):
    """Mean gradients over many draws agree with Trace_ELBO's within their Monte Carlo errors."""
    model, features, y, loc, cov = regression
    with pyro.settings.context(module_local_params=True):
        guide = guide_at(model, (features, y), loc + 0.3 * cov.diagonal().sqrt(), 2.0 * cov)
        pyro.set_rng_seed(1)
        estimates = {name: gradients(name, model, guide, (features, y), draws=500) for name in ("trace", "stl", "score")}
    reference = estimates["trace"]
    for name in ("stl", "score"):
        difference = estimates[name].mean(0) - reference.mean(0)
        error = (estimates[name].var(0) / 500 + reference.var(0) / 500).sqrt()
        assert torch.all(difference.abs() < 4 * error + 1e-9), (name, difference, error)
    assert float(estimates["score"].var(0).sum()) > 10 * float(estimates["trace"].var(0).sum())


def gamma_scale_model(x):
    """x ~ N(0, s), s ~ Gamma(2, 1): a latent on (0, ∞), which an auto guide samples in log space (an
    auxiliary site) and unpacks through a point mass that carries −log|J|."""
    s = pyro.sample("s", dist.Gamma(x.new_full((), 2.0), x.new_ones(())))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("x", dist.Normal(x.new_zeros(()), s), obs=x)


def mean_gradient(name, guide, x, particles: int, seed: int) -> torch.Tensor:
    pyro.set_rng_seed(seed)
    elbo = ELBOS[name](num_particles=particles, vectorize_particles=True, max_plate_nesting=1)
    loss = elbo.differentiable_loss(gamma_scale_model, guide, x)
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(guide.parameters()))])


@pytest.mark.parametrize("guide_class", [AutoNormal, AutoDiagonalNormal])
def test_stl_and_score_function_are_unbiased_on_a_constrained_latent(guide_class, device):
    """The point mass's −log|J| is path gradient, which STL keeps (dropping it moved the loc gradient by 1.0),
    and the score function counts the auxiliary site's −log q (leaving it out, as Pyro's log-ratio does,
    moved AutoNormal's scale gradient by 0.79)."""
    x = torch.tensor([0.5, -1.2, 2.0, 0.3, -0.7], dtype=torch.float64, device=device)
    with pyro.settings.context(module_local_params=True):
        guide = guide_class(gamma_scale_model, init_scale=0.5)
        guide(x)
        trace = mean_gradient("trace", guide, x, 20000, seed=0)
        stl = mean_gradient("stl", guide, x, 20000, seed=0)  # the same draws: they differ by a mean-zero term (se 0.015)
        assert torch.allclose(stl, trace, atol=0.1), (stl, trace)
        score = mean_gradient("score", guide, x, 400000, seed=1)  # Monte Carlo error 0.05-0.07
        reference = mean_gradient("trace", guide, x, 400000, seed=2)
        assert torch.allclose(score, reference, atol=0.3), (score, reference)


@pytest.mark.parametrize("guide", ["mean_field", "auto_normal", "auto_diag_normal", "auto_mvn", "auto_lowrank_mvn",
                                   "auto_iaf"])
def test_stl_fits_every_reparameterised_guide(guide, device):
    result = fit("bayes_regression", guide, data=cubic_arrays(300, seed=2), elbo="stl", steps=200, seed=0,
                 progress=False)
    assert result.losses[-20:].mean() < result.losses[:20].mean() - 20


def test_stl_refuses_point_estimates_and_guides_without_rsample(device):
    with pytest.raises(ZooError, match="--elbo stl needs a guide with a density; 'auto_delta'"):
        fit("bayes_regression", "auto_delta", data=cubic_arrays(100), elbo="stl", steps=5, progress=False)

    def coin(flips):
        p = pyro.sample("p", dist.Beta(flips.new_ones(()), 1.0))
        with pyro.plate("data", flips.shape[0]):
            pyro.sample("flips", dist.Bernoulli(p), obs=flips)

    class NoRsampleBeta(dist.Beta):
        has_rsample = False

    def discrete_guide(flips):
        pyro.sample("p", NoRsampleBeta(flips.new_ones(()), 1.0))

    flips = torch.tensor([1.0, 0.0, 1.0], device=device)
    with pytest.raises(ZooError, match="site 'p' samples from NoRsampleBeta, which has no rsample"):
        ELBOS["stl"]().differentiable_loss(coin, discrete_guide, flips)


def test_score_function_elbo_has_the_same_value_as_trace_elbo(device):
    """Only the gradient differs: with one fixed draw both losses are the same number."""
    def model(x):
        mu = pyro.sample("mu", dist.Normal(x.new_zeros(()), 1.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(mu, 1.0), obs=x)

    x = torch.randn(10, device=device)
    with pyro.settings.context(module_local_params=True):
        guide = AutoNormal(model)
        guide(x)
        values = []
        for name in ("trace", "stl", "score"):
            pyro.set_rng_seed(3)
            values.append(float(ELBOS[name]().differentiable_loss(model, guide, x).detach()))
    assert values[0] == pytest.approx(values[1], abs=1e-5) and values[0] == pytest.approx(values[2], abs=1e-5)


class Encoder(torch.nn.Module):
    """A linear-Gaussian amortised guide for probabilistic PCA, started away from the exact posterior."""

    def __init__(self, observed, latent):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.weight = torch.nn.Parameter(0.3 * torch.randn(latent, observed, generator=generator, dtype=torch.float64))
        self.log_scale = torch.nn.Parameter(torch.full((latent,), -0.5, dtype=torch.float64))

    def forward(self, x, num_examples=None, subsample=None):
        pyro.module("encoder", self)
        with pyro.plate("data", num_examples or x.shape[0], subsample=subsample):
            pyro.sample("z", dist.Normal(x @ self.weight.T, self.log_scale.exp()).to_event(1))


def ppca(device, rows=16):
    """PPCA with zero bias, its exact posterior guide, and a linear encoder a little off the exact posterior
    (near it, as where a fit spends its time: importance weights are then close to uniform)."""
    from test_local_latents import LATENT, NOISE, OBSERVED, make_guide, make_model

    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(OBSERVED, LATENT, generator=generator, dtype=torch.float64).to(device)
    bias = torch.zeros(OBSERVED, dtype=torch.float64, device=device)
    x = 2 * torch.randn(rows, OBSERVED, generator=generator, dtype=torch.float64).to(device)
    precision = weight.T @ weight + NOISE**2 * torch.eye(LATENT, dtype=torch.float64, device=device)
    encoder = Encoder(OBSERVED, LATENT).to(device)
    with torch.no_grad():
        encoder.weight.mul_(0.1).add_(torch.linalg.solve(precision, weight.T))
        encoder.log_scale.copy_((NOISE * torch.linalg.inv(precision).diagonal().sqrt()).log() + 0.1)
    return make_model(weight, bias), make_guide(weight, bias), encoder, weight, bias, x


def test_iwae_of_the_exact_posterior_is_the_exact_log_likelihood_for_any_k(device):
    model, exact_guide, _, weight, bias, x = ppca(device)
    from test_local_latents import NOISE, OBSERVED

    covariance = weight @ weight.T + NOISE**2 * torch.eye(OBSERVED, dtype=weight.dtype, device=device)
    exact = float(dist.MultivariateNormal(bias, covariance).log_prob(x).sum())
    for k in (1, 7):
        for name in ("iwae", "iwae_dreg"):
            loss = ELBOS[name](num_particles=k).differentiable_loss(model, exact_guide, x)
            assert float(loss.detach()) == pytest.approx(-exact, abs=1e-8)


def test_iwae_scales_by_n_over_batch_after_the_log_mean_exp(device):
    """On a minibatch of B of N rows the bound is (N/B) Σ_b log mean_k w_kb (not a log-mean-exp of scaled weights)."""
    model, _, encoder, weight, bias, x = ppca(device)
    from test_local_latents import LATENT, NOISE

    rows = torch.arange(4, device=device)

    def subsampled_model(x, num_examples=None, subsample=None):
        with pyro.plate("data", num_examples or x.shape[0], subsample=subsample):
            z = pyro.sample("z", dist.Normal(x.new_zeros(LATENT), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ weight.T + bias, NOISE).to_event(1), obs=x)

    with pyro.settings.context(module_local_params=True):
        pyro.set_rng_seed(2)
        scaled = ELBOS["iwae"](num_particles=5).differentiable_loss(subsampled_model, encoder, x[:4],
                                                                    num_examples=16, subsample=rows)
        pyro.set_rng_seed(2)
        unscaled = ELBOS["iwae"](num_particles=5).differentiable_loss(subsampled_model, encoder, x[:4])
    assert float(scaled.detach()) == pytest.approx(4.0 * float(unscaled.detach()), rel=1e-10)


def encoder_gradients(name, k, draws, device):
    model, _, encoder, _, _, x = ppca(device, rows=4)
    elbo = ELBOS[name](num_particles=k)
    rows = []
    with pyro.settings.context(module_local_params=True):
        for _ in range(draws):
            loss = elbo.differentiable_loss(model, encoder, x)
            rows.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(encoder.parameters()))]))
    return torch.stack(rows)


def test_dreg_is_unbiased_for_the_iwae_gradient(device):
    pyro.set_rng_seed(4)
    iwae, dreg = encoder_gradients("iwae", 5, 1500, device), encoder_gradients("iwae_dreg", 5, 1500, device)
    error = (iwae.var(0) / 1500 + dreg.var(0) / 1500).sqrt()
    assert torch.all((iwae.mean(0) - dreg.mean(0)).abs() < 4 * error)


def test_dreg_signal_to_noise_rises_with_k_where_iwaes_falls(device):
    """Rainforth et al. (2018): the encoder's gradient SNR of IWAE falls like 1/sqrt(K); DReG's rises."""
    pyro.set_rng_seed(5)

    def snr(name, k):
        gradients = encoder_gradients(name, k, 300, device)
        return float((gradients.mean(0).abs() / gradients.std(0)).median())

    assert snr("iwae", 64) < snr("iwae", 2)
    assert snr("iwae_dreg", 64) > snr("iwae_dreg", 2)


def test_dreg_is_unbiased_on_a_constrained_local_latent(device):
    """AutoNormal unpacks each example's z ∈ (0, ∞) through a point mass carrying −log|J|, all path gradient.
    Copies of three examples, each with its own parameters started alike, give one gradient per copy."""
    copies = 4000
    x = torch.tensor([0.5, -1.2, 2.0], dtype=torch.float64, device=device).repeat(copies)

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Gamma(x.new_full((), 2.0), x.new_ones(())))
            pyro.sample("x", dist.Normal(x.new_zeros(()), z), obs=x)

    means = {}
    with pyro.settings.context(module_local_params=True):
        guide = AutoNormal(model, init_scale=0.5)
        guide(x)
        pyro.set_rng_seed(6)
        for name in ("iwae", "iwae_dreg"):
            loss = ELBOS[name](num_particles=5).differentiable_loss(model, guide, x)
            gradient = torch.autograd.grad(loss, [guide.locs.z])[0].reshape(copies, 3)
            means[name] = (gradient.mean(0), gradient.var(0) / copies)
    (iwae, iwae_var), (dreg, dreg_var) = means["iwae"], means["iwae_dreg"]
    assert torch.all((iwae - dreg).abs() < 4 * (iwae_var + dreg_var).sqrt()), (iwae, dreg, iwae_var.sqrt())
