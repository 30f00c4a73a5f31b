"""Overhead cases for bnn_regression: the cubic data on raw x, n = 8 000 training points, full batch.

The floor is the same model (an MLP with one hidden layer of 50 ReLU units,
Normal(0, 1) priors on every weight and bias, sigma ~ HalfNormal(1), Gaussian
likelihood) with the same mean-field family (a Normal per weight with softplus
scales, a LogNormal for sigma), its ELBO written by hand in PyTorch: one
reparameterised draw per step, log p(y, w, sigma) - log q(w, sigma) at the draw
(as Trace_ELBO estimates it), Adam.
"""

import math

import torch
from torch.distributions import HalfNormal, LogNormal, Normal
from torch.nn.functional import relu, softplus

from pyro_vi_zoo.engine import resolve_settings
from pyro_vi_zoo.registry import get_family
from pyro_vi_zoo.runner import prepare
from svi_overhead import make_case, zoo_steps

INIT_SCALE = 0.01


def mean_field_parameters(sizes, device):
    """(loc, raw scale) of every weight and bias, initialised as the hand-written guide does."""
    params = []
    for fan_in, fan_out in sizes:
        bound = 1 / math.sqrt(fan_in)
        for shape in ((fan_out, fan_in), (fan_out,)):
            loc = torch.empty(shape, device=device).uniform_(-bound, bound).requires_grad_()
            raw = torch.full(shape, math.log(math.expm1(INIT_SCALE)), device=device, requires_grad=True)
            params.append((loc, raw))
    return params


def hand_written_update(x, y, sizes, prior_scale=1.0, lr=0.01, capturable=False):
    """One step of mean-field SVI for the Bayesian MLP in plain PyTorch (returns the loss)."""
    weights = mean_field_parameters(sizes, x.device)
    sigma_loc = torch.log(y.std()).detach().requires_grad_()
    sigma_raw = torch.tensor(math.log(math.expm1(INIT_SCALE)), device=x.device, requires_grad=True)
    optimizer = torch.optim.Adam([p for pair in weights for p in pair] + [sigma_loc, sigma_raw], lr=lr,
                                 capturable=capturable)
    prior = Normal(torch.tensor(0.0, device=x.device), torch.tensor(prior_scale, device=x.device))
    noise_prior = HalfNormal(torch.tensor(1.0, device=x.device))

    def update():
        optimizer.zero_grad(set_to_none=not capturable)
        log_q, log_prior, draws = 0.0, 0.0, []
        for loc, raw in weights:
            q = Normal(loc, softplus(raw))
            w = q.rsample()
            log_q = log_q + q.log_prob(w).sum()
            log_prior = log_prior + prior.log_prob(w).sum()
            draws.append(w)
        q_sigma = LogNormal(sigma_loc, softplus(sigma_raw))
        sigma = q_sigma.rsample()
        hidden = x
        for layer in range(0, len(draws) - 2, 2):
            hidden = relu(hidden @ draws[layer].T + draws[layer + 1])
        mean = (hidden @ draws[-2].T + draws[-1]).squeeze(-1)
        log_lik = Normal(mean, sigma).log_prob(y).sum()
        loss = -(log_lik + log_prior + noise_prior.log_prob(sigma) - log_q - q_sigma.log_prob(sigma))
        loss.backward()
        optimizer.step()
        return loss.detach()

    return update


def cases(device):
    family = get_family("bnn_regression")
    dataset, setup = prepare(family, None, resolve_settings({}, overrides={"device": str(device)}))
    x, y = dataset.train
    sizes, kwargs = setup.model.sizes, setup.model_kwargs
    out = []
    floor = lambda capturable: hand_written_update(x, y, sizes, kwargs["prior_scale"], capturable=capturable)
    for elbo in ("trace", "jit"):
        for guide in ("mean_field", "auto_normal"):
            zoo = lambda capture, guide=guide, elbo=elbo: zoo_steps("bnn_regression", guide, dataset, setup, elbo,
                                                                     capture)
            out.append(make_case(f"bnn_regression n={len(y)} {guide:11s} {elbo}", zoo, floor, device, elbo, 2.0))
    return out
