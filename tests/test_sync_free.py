"""The zoo's ELBOs compute Pyro's numbers without reading anything back to the host.

Against Pyro's Trace_ELBO and TraceMeanField_ELBO, same seed, every family and its guides: the same loss
and the same gradients to float tolerance. On PyTorch's ``meta`` device (tensors with shapes and no
values) any ``.item()``, ``float()`` or branch on a tensor's value fails, and so does mixing in a tensor
made on another device: a step that runs there holds no host synchronisation and makes everything on
its inputs' device, as a captured CUDA graph requires.
"""

from dataclasses import replace

import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

from pyro_vi_zoo.engine import ELBOS
from pyro_vi_zoo.registry import get_family
from pyro_vi_zoo.runner import guide_choice

CASES = [("bayes_regression", "mean_field"), ("bayes_regression", "auto_normal"), ("bayes_regression", "auto_mvn"),
         ("bnn_regression", "mean_field"), ("bnn_regression", "auto_normal"), ("gmm", "mean_field"),
         ("gmm", "auto_normal")]
PYRO = {"trace": Trace_ELBO, "meanfield": TraceMeanField_ELBO}


def small(name, device, rows=64):
    family = get_family(name)
    dataset = family.load_data(None)
    dataset = replace(dataset, train=tuple(a[:rows] for a in dataset.train), test=None).to(device)
    return family, dataset, family.setup(dataset)


def guide_parameters(guide):
    """A module guide's parameters, or a function guide's (in the param store)."""
    if isinstance(guide, torch.nn.Module):
        return list(guide.parameters())
    return [pyro.get_param_store()[name].unconstrained() for name in pyro.get_param_store().keys()]


def loss_and_gradients(elbo, setup, guide, args, seed):
    pyro.set_rng_seed(seed)
    loss = elbo.differentiable_loss(setup.model, guide, *args)
    return loss.detach(), torch.autograd.grad(loss, guide_parameters(guide))


@pytest.mark.parametrize("elbo_name", ["trace", "meanfield"])
@pytest.mark.parametrize("name, guide_name", CASES)
def test_same_loss_and_gradients_as_pyro(name, guide_name, elbo_name, device):
    family, dataset, setup = small(name, device)
    with pyro.settings.context(module_local_params=True), pyro.get_param_store().scope():
        guide = guide_choice(guide_name, setup, family).build()
        pyro.set_rng_seed(0)
        guide(*dataset.train)  # creates the parameters
        options = dict(num_particles=3, vectorize_particles=True, max_plate_nesting=setup.max_plate_nesting)
        ours = loss_and_gradients(ELBOS[elbo_name](**options), setup, guide, dataset.train, seed=5)
        theirs = loss_and_gradients(PYRO[elbo_name](**options), setup, guide, dataset.train, seed=5)
    assert torch.allclose(ours[0], torch.as_tensor(theirs[0], dtype=ours[0].dtype), rtol=1e-5, atol=1e-3)
    for mine, pyros in zip(ours[1], theirs[1]):
        assert torch.allclose(mine, pyros, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("elbo_name", ["trace", "meanfield", "stl"])
@pytest.mark.parametrize("name, guide_name", [("bayes_regression", "mean_field"), ("bnn_regression", "mean_field")])
def test_the_step_runs_on_the_meta_device(name, guide_name, elbo_name):
    """The hand-written guides (auto guides read values once, when they set themselves up, before any
    step); gmm is left out: torch has no meta kernel for Dirichlet sampling."""
    family, dataset, setup = small(name, "meta")
    with pyro.settings.context(module_local_params=True), pyro.get_param_store().scope(), \
            pyro.validation_enabled(False):
        guide = guide_choice(guide_name, setup, family).build()
        loss = ELBOS[elbo_name](max_plate_nesting=setup.max_plate_nesting).differentiable_loss(
            setup.model, guide, *dataset.train)
        loss.backward()
        parameters = guide_parameters(guide)
    assert loss.device.type == "meta"
    assert parameters and all(p.grad is not None and p.grad.device.type == "meta" for p in parameters)
