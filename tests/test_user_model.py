"""A user's own Pyro model in the runner: the README example, an exact conjugate answer, and the
one-line errors for models, data and guides that do not fit."""

import functools
import re
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

import pyro_vi_zoo as zoo
from pyro_vi_zoo.errors import DataError, Note, ZooError

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


def plain_matmul(x, y=None):
    weight = pyro.sample("weight", dist.Normal(x.new_zeros(x.shape[-1]), 1.0).to_event(1))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("y", dist.Normal(x @ weight, 1.0), obs=y)


def rows_in_event(x, y=None):
    """No plate: the data's rows are an event dimension, so a batch of draws lands on them."""
    weight = pyro.sample("weight", dist.Normal(x.new_zeros(x.shape[-1]), 1.0).to_event(1))
    pyro.sample("y", dist.Normal((x * weight).sum(-1), 1.0).to_event(1), obs=y)


def bernoulli_labels(x, y=None):
    weight = pyro.sample("weight", dist.Normal(x.new_zeros(x.shape[-1]), 1.0).to_event(1))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("y", dist.Bernoulli(logits=(x * weight).sum(-1)), obs=y)


def unvectorised_guide(x, y=None):
    loc = pyro.param("loc", lambda: x.new_zeros(x.shape[-1]))
    weight = pyro.sample("weight", dist.Normal(loc, 0.1).to_event(1))
    return x @ weight  # a batch of weights on the left does not multiply this way


def flat_guide(x, y=None):
    loc = pyro.param("loc", lambda: x.new_zeros(x.shape[-1]))
    pyro.sample("weight", dist.Normal(loc, 0.1))


def narrow_guide(x, y=None):
    loc = pyro.param("loc", lambda: x.new_zeros(3))
    pyro.sample("weight", dist.Normal(loc, 0.1).to_event(1))


def guide_of_nothing(x):
    pass


X, Y = torch.randn(30, 2), torch.randn(30)


@pytest.mark.parametrize("model, data, guides, error, message", [
    (no_latents, (X, Y), None, ZooError, "no latent sample sites"),
    (broken, (X, Y), None, ZooError, r"calling broken\(\*data\) failed with RuntimeError: shapes"),
    (matrix_product, (X, Y), None, ZooError, "site 'y' has batch shape .* broadcast over leading dimensions"),
    (plain_matmul, (X, Y), None, ZooError, "the model fails when its latents carry a batch of 3 draws on the left "
                                           r"\(RuntimeError: .*\); .* broadcast over leading dimensions"),
    (rows_in_event, (X, Y), None, ZooError, r"site 'y' has batch shape \(3, 3\) .* \(3, 1\) was expected.*pyro.plate"),
    (bernoulli_labels, (X, (Y > 0).long()), None, ZooError,
     r"calling bernoulli_labels\(\*data\) failed with RuntimeError: .*Long.*dtypes"),
    (linear, (X[:0], Y[:0]), None, DataError, "the data have no rows"),
    (linear, (X, Y), [unvectorised_guide], ZooError, "guide 'unvectorised_guide' fails when its draws are batched"),
    (linear, (X, Y), [flat_guide], ZooError, r"'weight' with 0 event dimension\(s\), but the model's has 1: use "
                                             r"\.to_event\(1\)"),
    (linear, (X, Y), [narrow_guide], ZooError, r"'weight' with shape \(3,\), but the model's has shape \(2,\)"),
    (linear, (X, Y), [guide_of_nothing], ZooError, r"calling guide 'guide_of_nothing'\(\*data\) failed with "
                                                   "TypeError"),
    (linear, (X, Y), [flat_guide, lambda x, y=None: flat_guide(x, y), lambda x, y=None: flat_guide(x, y)],
     ZooError, "several guides are named '<lambda>'"),
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


def test_a_model_with_nested_plates_reaches_its_exact_posterior(device):
    """Rows × columns: the model's plates take dims −2 and −1, so the runner draws at dim −3."""
    Y = torch.randn(200, 3, generator=torch.Generator().manual_seed(0)).to(device) + torch.tensor([0.0, 1.0, 2.0],
                                                                                              device=device)

    def nested(Y):
        with pyro.plate("columns", 3, dim=-1):
            mu = pyro.sample("mu", dist.Normal(Y.new_zeros(()), PRIOR_SCALE))
            with pyro.plate("rows", Y.shape[0], dim=-2):
                pyro.sample("y", dist.Normal(mu, 1.0), obs=Y)

    comparison = zoo.compare(nested, data=(Y,), guides=["auto_normal"], steps=800, lr=0.05, seed=0, progress=False,
                             draw_figures=False)
    (train,) = comparison.fits["auto_normal"].args
    precision = 1 / PRIOR_SCALE**2 + train.shape[0]
    exact_loc, exact_scale = train.sum(0) / precision, precision ** -0.5
    draws = comparison.fits["auto_normal"].sample_posterior(4000)["mu"]
    assert comparison.fits["auto_normal"].max_plate_nesting == 2
    assert torch.allclose(draws.mean(0), exact_loc, atol=0.2 * exact_scale)
    assert torch.allclose(draws.std(0), torch.full_like(exact_loc, exact_scale), rtol=0.15)
    assert comparison.table["pareto_k"].iloc[0] < 0.5


def regression(x, y=None):
    weight = pyro.sample("weight", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("y", dist.Normal((x * weight).sum(-1), 0.5), obs=y)


def self_subsampled_regression(x, y=None):
    """The same model with its minibatch fixed inside: fits see 50 rows a step, scores must see every row."""
    weight = pyro.sample("weight", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
    with pyro.plate("data", x.shape[0], subsample_size=50) as rows:
        pyro.sample("y", dist.Normal((x[rows] * weight).sum(-1), 0.5), obs=None if y is None else y[rows])


def test_a_model_that_subsamples_itself_is_scored_on_every_row(device):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1000, 2, generator=generator)
    y = (x * torch.tensor([1.0, -2.0])).sum(-1) + 0.5 * torch.randn(1000, generator=generator)
    tables = [zoo.compare(model, data=(x.to(device), y.to(device)), guides=["auto_mvn"], steps=300, lr=0.1, seed=0,
                          progress=False, draw_figures=False).table.iloc[0]
              for model in (regression, self_subsampled_regression)]
    full, subsampled = tables
    assert subsampled["test_lpd"] == pytest.approx(full["test_lpd"], abs=0.01)  # 200 rows, not 50 over 200
    assert subsampled["elbo"] == pytest.approx(full["elbo"], abs=1.5)  # the whole data's ELBO, not a minibatch's
    assert subsampled["pareto_k"] < 0.7 and subsampled["rmse"] == pytest.approx(full["rmse"], rel=0.01)
    with pyro.plate("data", 10, subsample_size=4) as rows:  # the plate is left as it was
        assert len(rows) == 4


def test_a_model_that_enumerates_is_compared_with_its_sites_summed_out(device):
    """A two-component mixture with known locations and weight p ~ Beta(1, 1): the ELBO and k̂ come from
    importance weights with the assignments summed out, checked against log p(x) by quadrature over p."""
    generator = torch.Generator().manual_seed(0)
    assignment = torch.rand(300, generator=generator) < 0.3
    y = (torch.where(assignment, 3.0, -1.0) + torch.randn(300, generator=generator)).to(device)

    @pyro.infer.config_enumerate
    def mixture(y):
        p = pyro.sample("p", dist.Beta(y.new_ones(()), y.new_ones(())))
        with pyro.plate("data", y.shape[0]):
            z = pyro.sample("z", dist.Bernoulli(p))
            pyro.sample("y", dist.Normal(y.new_tensor([-1.0, 3.0])[z.long()], 1.0), obs=y)

    comparison = zoo.compare(mixture, data=(y,), guides=["auto_normal"], steps=600, lr=0.05, seed=0,
                             progress=False, draw_figures=False)
    row = comparison.table.iloc[0]
    (train,) = comparison.fits["auto_normal"].args
    grid = torch.linspace(1e-4, 1 - 1e-4, 20001, dtype=torch.float64)
    low, high = (dist.Normal(location, 1.0).log_prob(train.double().cpu()) for location in (-1.0, 3.0))
    log_joint = torch.logaddexp(torch.log1p(-grid)[:, None] + low, grid.log()[:, None] + high).sum(1)
    log_evidence = float(torch.logsumexp(log_joint, 0) + torch.log(grid[1] - grid[0]))
    posterior = torch.softmax(log_joint, 0)
    assert row["status"] == "ok" and row["elbo_kind"] == "enum"
    assert log_evidence - 0.1 < row["elbo"] < log_evidence + 0.01  # a bound, and a tight one for this posterior
    assert row["pareto_k"] < 0.5
    draws = comparison.fits["auto_normal"].sample_posterior(4000)
    assert set(draws) == {"p"} and float(draws["p"].mean()) == pytest.approx(float((posterior * grid).sum()), abs=0.005)


def eight_schools(sigma, y=None):
    """The non-centred eight schools with tau ~ HalfCauchy(5), whose prior mean is infinite."""
    mu = pyro.sample("mu", dist.Normal(sigma.new_zeros(()), 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(sigma.new_full((), 5.0)))
    with pyro.plate("schools", sigma.shape[0]):
        eta = pyro.sample("eta", dist.Normal(sigma.new_zeros(()), 1.0))
        pyro.sample("obs", dist.Normal(mu + tau * eta, sigma), obs=y)


def test_auto_guides_start_finite_where_a_prior_has_no_finite_mean():
    sigma = torch.tensor([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])
    y = torch.tensor([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
    comparison = zoo.compare(eight_schools, data=(sigma, y), guides=["auto_normal", "auto_mvn"], steps=300, seed=0,
                             progress=False, draw_figures=False)
    assert (comparison.table["status"] == "ok").all() and np.isfinite(comparison.table["elbo"]).all()


def aux_guide(x, y=None):
    """A guide with an auxiliary joint draw mapped onto the model's site."""
    loc = pyro.param("loc", lambda: x.new_zeros(x.shape[-1]))
    tril = pyro.param("tril", lambda: 0.1 * torch.eye(x.shape[-1]), dist.constraints.lower_cholesky)
    joint = pyro.sample("joint", dist.MultivariateNormal(loc, scale_tril=tril), infer={"is_auxiliary": True})
    pyro.sample("weight", dist.Delta(joint, event_dim=1))


def test_a_users_auxiliary_sites_and_auto_guide_instances_fit():
    from pyro.infer.autoguide import AutoMultivariateNormal

    x, y = torch.randn(60, 2, generator=torch.Generator().manual_seed(0)), torch.randn(60)
    built_outside = AutoMultivariateNormal(linear)  # at a script's top level: not module-local
    comparison = zoo.compare(linear, data=(x, y), guides=[aux_guide, built_outside], steps=50, seed=0,
                             progress=False, draw_figures=False)
    assert list(comparison.table["status"]) == ["ok", "ok"] and not pyro.get_param_store().keys()
    called = AutoMultivariateNormal(linear)
    called(x, y)  # its parameters now live in the global store, out of the runner's reach
    with pytest.raises(ZooError, match="built and called outside module-local parameters"):
        zoo.fit(linear, data=(x, y), guide=called, steps=5, progress=False)
    pyro.clear_param_store()


def test_held_out_scores_leave_out_masked_rows_deterministic_sites_and_factors():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(60, generator=generator)
    y = 1.5 * x + 0.3 + 0.5 * torch.randn(60, generator=generator)
    keep = torch.arange(60) % 7 != 0

    def regression(x, y, keep, use_mask=True, extras=False):
        w = pyro.sample("w", dist.Normal(x.new_zeros(()), 2.0))
        b = pyro.sample("b", dist.Normal(x.new_zeros(()), 2.0))
        if extras:
            pyro.factor("nothing", w.new_zeros(w.shape))
        with pyro.plate("data", x.shape[0]), pyro.poutine.mask(mask=keep if use_mask else True):
            mean = pyro.deterministic("mean", w * x + b) if extras else w * x + b
            pyro.sample("y", dist.Normal(mean, 0.5), obs=y)

    score = lambda y, **options: zoo.compare(functools.partial(regression, **options), data=(x, y, keep),
                                             guides=["auto_mvn"], steps=300, seed=0, progress=False,
                                             draw_figures=False).table.iloc[0]
    real = score(y)
    sentinel = score(torch.where(keep, y, torch.tensor(100.0)))  # masked rows hold nonsense
    for column in ("elbo", "test_lpd", "rmse", "coverage_90"):
        assert sentinel[column] == pytest.approx(real[column], abs=1e-6), column
    plain, extras = score(y, use_mask=False), score(y, use_mask=False, extras=True)
    for column in ("test_lpd", "rmse", "coverage_90"):  # a deterministic site and a zero factor change nothing
        assert extras[column] == pytest.approx(plain[column], abs=1e-6), column


def test_per_row_latents_get_no_held_out_scores_and_say_why():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(60, generator=generator)
    y = 1.5 * x + 0.5 * torch.randn(60, generator=generator)

    def per_row(x, y=None):
        w = pyro.sample("w", dist.Normal(x.new_zeros(()), 2.0))
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(()), 1.0))
            pyro.sample("y", dist.Normal(w * x + 0.3 * z, 0.5), obs=y)

    with pytest.warns(Note, match="no held-out scores for auto_normal: the latent site\\(s\\) 'z' hold one value per"):
        table = zoo.compare(per_row, data=(x, y), guides=["auto_normal"], steps=50, seed=0, progress=False,
                            draw_figures=False).table
    assert table["status"].iloc[0] == "ok" and np.isfinite(table["elbo"].iloc[0]) and "test_lpd" not in table
