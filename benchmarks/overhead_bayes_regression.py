"""Overhead cases for bayes_regression: n = 8 000 training points, cubic features, known noise.

The floor is the same model (Normal priors, Normal likelihood, known noise) with
the same mean-field Normal family, its ELBO written by hand in PyTorch, one
reparameterised draw per step, Adam.
"""

import math

import torch

from pyro_vi_zoo.data.regression import cubic_dataset
from pyro_vi_zoo.registry import get_family

from svi_overhead import make_case, zoo_steps


def hand_written_update(features, y, prior_scale, noise_scale, lr=0.01, capturable=False):
    """One step of mean-field SVI for Bayesian linear regression in plain PyTorch (returns the loss)."""
    dim = features.shape[1] + 1
    loc = torch.zeros(dim, device=features.device, requires_grad=True)
    log_scale = torch.full((dim,), math.log(0.01), device=features.device, requires_grad=True)
    optimizer = torch.optim.Adam([loc, log_scale], lr=lr, capturable=capturable)
    prior = torch.distributions.Normal(torch.zeros(dim, device=features.device), prior_scale)
    noise = torch.as_tensor(noise_scale, dtype=features.dtype, device=features.device)

    def update():
        optimizer.zero_grad(set_to_none=not capturable)
        scale = log_scale.exp()
        theta = loc + scale * torch.randn_like(loc)
        mean = features @ theta[:-1] + theta[-1]
        log_joint = torch.distributions.Normal(mean, noise).log_prob(y).sum() + prior.log_prob(theta).sum()
        entropy = log_scale.sum()  # + constant
        loss = -(log_joint + entropy)
        loss.backward()
        optimizer.step()
        return loss.detach()

    return update


def cases(device):
    """The issue's size (n = 8 000, both guides, both ELBOs), and 10x the data to show the overhead is fixed."""
    out = []
    for num_points, guides in ((10_000, ("mean_field", "auto_normal")), (100_000, ("mean_field",))):
        dataset = cubic_dataset(num_points=num_points).to(device)
        setup = get_family("bayes_regression").setup(dataset, noise="known")
        kwargs = setup.model_kwargs
        features, y = dataset.train
        floor = lambda capturable: hand_written_update(features, y, kwargs["prior_scale"], kwargs["noise_scale"],
                                                       capturable=capturable)
        for elbo, target in (("trace", 2.0), ("jit", 1.3)):
            for guide in guides:
                label = f"bayes_regression n={len(y)} {guide:11s} {elbo}"
                zoo = lambda capture, guide=guide, elbo=elbo: zoo_steps("bayes_regression", guide, dataset, setup,
                                                                         elbo, capture)
                out.append(make_case(label, zoo, floor, device, elbo, target))
    return out
