"""Shared fixtures. ``pytest --device cuda`` runs the same tests on a GPU (default: cpu)."""

import pyro
import pytest
import torch

from pyro_vi_zoo.devices import resolve_device


def pytest_addoption(parser):
    parser.addoption("--device", default="cpu", help="torch device for models and fits: cpu (default), cuda, auto")
    parser.addoption("--rng-seed", type=int, default=0,
                     help="the random state every test starts from (default 0); another shows which tests "
                          "hold for one stream of draws only, as a GPU's stream would")


def pytest_configure(config):
    # the zoo's models are small: one thread avoids OpenMP oversubscription on shared 2-core machines
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def device(request) -> str:
    """The device name the tests run on; fails clearly when CUDA is asked for and absent."""
    name = request.config.getoption("--device")
    return str(resolve_device(name))


@pytest.fixture(scope="session", autouse=True)
def fits_default_to_the_suites_device(device):
    """A fit or command line that names no device runs on the suite's (``auto`` would pick CUDA under --device cpu)."""
    from pyro_vi_zoo.engine.settings import DEFAULTS

    chosen = DEFAULTS["device"]
    DEFAULTS["device"] = device
    yield
    DEFAULTS["device"] = chosen


@pytest.fixture(autouse=True)
def fresh_pyro_state(request):
    pyro.clear_param_store()
    pyro.set_rng_seed(request.config.getoption("--rng-seed"))
    yield
    pyro.clear_param_store()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A private cache folder, so tests never read or write the user's cache."""
    monkeypatch.setenv("PYRO_VI_ZOO_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"
