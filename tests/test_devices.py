"""Everything the zoo makes lives on the data's device, or on the host where it means to be there.

A tensor made without ``device=`` lands on torch's default device. On a GPU machine that is the CPU
while the data sits on CUDA, and the mix fails far from its cause. These tests make the mistake
visible on any machine: torch's default device becomes ``meta`` (shapes, no values) while the data stays
on the suite's device, so a tensor made without a device meets the data's tensors and fails, and a
host-side statistic that forgot to say "cpu" cannot be read. A whole comparison per family, every row,
its scores and figures, runs that way; so does a user's own model with numpy data.
"""

import dataclasses

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

import pyro_vi_zoo as zoo
from pyro_vi_zoo.families import vae
from pyro_vi_zoo.registry import get_family

#: the VAE's scores with fewer fits of their own (each step costs milliseconds of Pyro overhead)
QUICK_VAE = dataclasses.replace(vae.FAMILY, scoring=dataclasses.replace(
    vae.FAMILY.scoring, free_fit_steps=20, prior_fit_steps=20, gap_samples=20, moment_samples=50))
FAMILIES = {
    "bayes_regression": ({}, {}),
    "bnn_regression": ({}, {}),
    "gmm": ({}, {}),
    "vae": ({"train_limit": 100, "test_limit": 10}, {"latent_dim": 2, "hidden": "16"}),
    "autorec": ({}, {"hidden": 8}),
}
SMALL_BUDGET = dict(num_eval_samples=50, num_elbo_particles=50, num_is_samples=10)


@pytest.fixture
def stray_tensors_fail():
    """Torch's default device is ``meta`` inside the test; the previous one comes back after it."""
    with torch.device("meta"):
        yield


@pytest.mark.parametrize("name", list(FAMILIES))
def test_a_comparison_makes_nothing_on_torchs_default_device(name, device):
    data_options, model_options = FAMILIES[name]
    family = QUICK_VAE if name == "vae" else get_family(name)
    data = family.load_data(None, **data_options)  # loading reads files or generates on the host
    with torch.device("meta"):
        comparison = zoo.compare(family, data=data, model_options=model_options, fast=True, seed=0, device=device,
                                 progress=False, **SMALL_BUDGET)
    table = comparison.table
    assert (table["status"] == "ok").all(), table[["guide", "status", "error"]].to_string()
    assert list(table["guide"]) == list(family.row_names)
    assert comparison.figures and all(fit.device.type == torch.device(device).type for fit in comparison.fits.values())


def linear(x, y=None):
    """A user's model written for any device: constants from the data, the plate on the data's device."""
    weight = pyro.sample("weight", dist.Normal(x.new_zeros(x.shape[-1]), 1.0).to_event(1))
    with pyro.plate("data", x.shape[0], device=x.device):
        pyro.sample("y", dist.Normal((x * weight).sum(-1), 0.5), obs=y)


def test_a_users_model_with_numpy_data_makes_nothing_on_torchs_default_device(device, stray_tensors_fail):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 2))
    y = x @ np.array([1.0, -1.0]) + rng.normal(scale=0.5, size=60)
    comparison = zoo.compare(linear, data=(x, y), guides=["auto_normal", "auto_mvn", "auto_iaf", "auto_laplace"],
                             steps=30, seed=0, progress=False, device=device, **SMALL_BUDGET)
    assert (comparison.table["status"] == "ok").all(), comparison.table.to_string()
