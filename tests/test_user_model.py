"""A user's own Pyro model in the runner: the README example, an exact conjugate answer, and the
one-line errors for models, data and guides that do not fit."""

import re
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

import pyro_vi_zoo as zoo
from pyro_vi_zoo.errors import DataError, ZooError

README = Path(__file__).resolve().parents[1] / "README.md"
PRIOR_SCALE = 10.0


def readme_example() -> str:
    text = README.read_text()
    match = re.search(r"<!-- user-model-example -->\s*```python\n(.*?)```", text, re.S)
    assert match, "README.md lost its user-model example"
    return match.group(1)


def test_the_readme_example_runs_and_prints_a_table(capsys):
    namespace = {}
    exec(compile(readme_example(), str(README), "exec"), namespace)
    table = namespace["comparison"].table
    assert list(table["guide"]) == ["auto_normal", "auto_mvn", "poisson_guide"]
    assert (table["status"] == "ok").all()
    assert table[["elbo", "pareto_k", "test_lpd", "wall_time_s"]].notna().all().all()
    assert table["elbo"].max() - table["elbo"].min() < 5  # three fits of one posterior
    printed = capsys.readouterr().out
    assert "poisson_guide" in printed and "test_lpd" in printed


def normal_mean(y):
    """y_i ~ N(mu, 1), mu ~ N(0, 10²): the posterior of mu is Normal in closed form."""
    mu = pyro.sample("mu", dist.Normal(y.new_zeros(()), PRIOR_SCALE))
    with pyro.plate("data", y.shape[0]):
        pyro.sample("y", dist.Normal(mu, 1.0), obs=y)


def test_auto_normal_reaches_the_exact_posterior_of_a_users_conjugate_model(device):
    y = torch.randn(60, generator=torch.Generator().manual_seed(0)).to(device) + 2.0
    result = zoo.fit(normal_mean, data=(y,), guide="auto_normal", steps=1500, lr=0.05, seed=0, progress=False)
    (train,) = result.args
    precision = 1 / PRIOR_SCALE**2 + len(train)
    exact_loc, exact_scale = float(train.sum()) / precision, precision ** -0.5
    assert len(train) == 48  # the runner held out 20% for predictive scores
    with result.activate():
        loc, scale = float(result.guide.locs.mu.detach()), float(result.guide.scales.mu.detach())
    assert loc == pytest.approx(exact_loc, abs=0.1 * exact_scale)
    assert scale == pytest.approx(exact_scale, rel=0.1)


def no_latents(x, y=None):
    with pyro.plate("data", x.shape[0]):
        pyro.sample("y", dist.Normal(x[:, 0], 1.0), obs=y)


def broken(x, y=None):
    raise RuntimeError("shapes (3,) and (4,) do not match")


def matrix_product(x, y=None):
    weight = pyro.sample("weight", dist.Normal(x.new_zeros(x.shape[-1]), 1.0).to_event(1))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("y", dist.Normal((x @ weight.unsqueeze(-1)).squeeze(-1), 1.0), obs=y)


def linear(x, y=None):
    weight = pyro.sample("weight", dist.Normal(x.new_zeros(x.shape[-1]), 1.0).to_event(1))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("y", dist.Normal((x * weight).sum(-1), 1.0), obs=y)


def wrong_guide(x, y=None):
    pyro.sample("weights", dist.Normal(x.new_zeros(x.shape[-1]), 1.0).to_event(1))


X, Y = torch.randn(30, 2), torch.randn(30)


@pytest.mark.parametrize("model, data, guides, error, message", [
    (no_latents, (X, Y), None, ZooError, "no latent sample sites"),
    (broken, (X, Y), None, ZooError, r"calling broken\(\*data\) failed with RuntimeError: shapes"),
    (matrix_product, (X, Y), None, ZooError, "site 'y' has batch shape .* broadcast over leading dimensions"),
    (linear, (X, Y[:20]), None, DataError, r"disagree in their number of rows .*\[30, 20\]"),
    (linear, (X, "y"), None, DataError, "data argument 1 is a str; pass tensors or numpy arrays"),
    (linear, {"x": X}, None, DataError, "data must be a tuple of tensors or arrays"),
    (linear, (X.numpy(), np.where(np.arange(30) == 3, np.nan, Y.numpy())), None, DataError, "NaN"),
    (linear, None, None, DataError, "no embedded data; pass data="),
    (linear, (X, Y), [wrong_guide], ZooError, r"wrong_guide.*missing \['weight'\], extra \['weights'\]"),
    (linear, (X, Y), ["auto_nope"], ZooError, "unknown guide 'auto_nope' for linear; choose from: auto_normal"),
])
def test_bad_models_data_and_guides_get_one_clear_line(model, data, guides, error, message):
    with pytest.raises(error, match=message):
        zoo.compare(model, data=data, guides=guides, steps=5, progress=False)


def test_numpy_data_and_a_single_guide_callable_fit(device):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 2))
    y = x @ np.array([1.0, -1.0]) + rng.normal(scale=0.5, size=40)

    def linear_guide(x, y=None):
        loc = pyro.param("loc", lambda: x.new_zeros(x.shape[-1]))
        scale = pyro.param("scale", lambda: x.new_full((x.shape[-1],), 0.1), dist.constraints.positive)
        pyro.sample("weight", dist.Normal(loc, scale).to_event(1))

    comparison = zoo.compare(linear, data=(x, y), guides=linear_guide, steps=300, seed=0, progress=False,
                             device=device, draw_figures=False)
    row = comparison.table.iloc[0]
    assert row["guide"] == "linear_guide" and row["status"] == "ok"
    assert row["dataset"] == "linear" and row["num_train"] == 32 and row["num_test"] == 8
    assert np.isfinite(row["test_lpd"]) and 0.0 <= row["coverage_90"] <= 1.0
