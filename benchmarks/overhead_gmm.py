"""Overhead cases for gmm: the default 2-D, two-component data, all n = 1000 points, full batch.

The floor is the marginalised model (Dirichlet weights, Normal locations, LogNormal
scales, mixture likelihood by logsumexp over components) with the same mean-field
family as the hand-written guide (Dirichlet, Normal, LogNormal), its ELBO written
by hand in PyTorch: one reparameterised draw per step, log q at the draw, Adam.
The enumerated model (TraceEnum_ELBO) computes the same marginal likelihood by
tensor contraction, so it is timed against the same floor, with a looser target (3x: the contraction and
the enumerated bookkeeping are work the floor's logsumexp does not do).
"""

import torch
import torch.distributions as td

from pyro_vi_zoo.data.mixture import default_mixture
from pyro_vi_zoo.registry import get_family

from svi_overhead import make_case, zoo_steps


def _vector(data, value, size):
    return torch.as_tensor(value, dtype=data.dtype, device=data.device).expand(size)


def hand_written_update(data, num_components, priors, lr=0.01, capturable=False):
    """One step of mean-field SVI for the marginalised Gaussian mixture in plain PyTorch (returns the loss)."""
    num_data, dim = data.shape
    shape = (num_components, dim)
    generator = torch.Generator(device="cpu").manual_seed(0)
    start = data[torch.randperm(num_data, generator=generator)[:num_components].to(data.device)].clone()
    log_concentration = torch.full((num_components,), float(num_data / num_components), device=data.device).log()
    params = {
        "log_concentration": log_concentration.requires_grad_(),
        "locs_loc": start.requires_grad_(),
        "locs_log_scale": torch.full(shape, -3.0, device=data.device, requires_grad=True),
        "scales_loc": data.std(0).mul(0.5).log().expand(shape).clone().requires_grad_(),
        "scales_log_scale": torch.full(shape, -3.0, device=data.device, requires_grad=True),
    }
    optimizer = torch.optim.Adam(params.values(), lr=lr, capturable=capturable)
    weight_prior = td.Dirichlet(_vector(data, priors.weight_concentration, (num_components,)))
    loc_prior = td.Normal(_vector(data, priors.loc_loc, (dim,)), _vector(data, priors.loc_scale, (dim,)))
    scale_prior = td.LogNormal(_vector(data, priors.scale_loc, (dim,)), _vector(data, priors.scale_scale, (dim,)))

    def update():
        optimizer.zero_grad(set_to_none=not capturable)
        q_weights = td.Dirichlet(params["log_concentration"].exp())
        q_locs = td.Normal(params["locs_loc"], params["locs_log_scale"].exp())
        q_scales = td.LogNormal(params["scales_loc"], params["scales_log_scale"].exp())
        weights, locs, scales = q_weights.rsample(), q_locs.rsample(), q_scales.rsample()
        log_prior = weight_prior.log_prob(weights) + loc_prior.log_prob(locs).sum() + scale_prior.log_prob(scales).sum()
        component = td.Normal(locs, scales).log_prob(data.unsqueeze(-2)).sum(-1) + weights.log()
        log_likelihood = component.logsumexp(-1).sum()
        log_q = q_weights.log_prob(weights) + q_locs.log_prob(locs).sum() + q_scales.log_prob(scales).sum()
        loss = log_q - log_prior - log_likelihood
        loss.backward()
        optimizer.step()
        return loss.detach()

    return update


def cases(device):
    dataset = default_mixture(test_fraction=0.0).to(device)
    family = get_family("gmm")
    data = dataset.train[0]
    out = []
    variants = (
        ("marginalised", "trace", ("mean_field", "auto_normal"), 2.0),
        ("marginalised", "jit", ("mean_field",), 1.3),
        ("enumerated", "enum", ("mean_field", "auto_normal"), 3.0),
    )
    for assignments, elbo, guides, target in variants:
        setup = family.setup(dataset, assignments=assignments)
        kwargs = setup.model_kwargs
        floor = lambda capturable, kwargs=kwargs: hand_written_update(data, kwargs["num_components"], kwargs["priors"],
                                                                      capturable=capturable)
        for guide in guides:
            label = f"gmm n={len(data)} {assignments:12s} {guide:11s} {elbo}"
            zoo = lambda capture, guide=guide, elbo=elbo, setup=setup: zoo_steps("gmm", guide, dataset, setup, elbo,
                                                                                  capture)
            out.append(make_case(label, zoo, floor, device, elbo, target))
    return out
