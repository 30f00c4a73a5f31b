"""The gmm family through the runner: recovery of the truth, every guide on the command line,
both assignment modes, the posteriordb reference path on generated data, bad input."""


import numpy as np
import pytest
import torch

import pyro_vi_zoo as zoo
from pyro_vi_zoo.cli import main as run_command_line
from pyro_vi_zoo.engine import latent_sites
from pyro_vi_zoo.data.mixture import sample_mixture, write_posteriordb_mixture
from pyro_vi_zoo.errors import DataError, ZooError
from pyro_vi_zoo.families import gmm as family
from pyro_vi_zoo.models.gmm import GLOBAL_SITES, mixture_log_likelihood

GUIDES = family.FAMILY.guides
fit_model = zoo.fit
TRUE_1D = {"weights": np.array([0.4, 0.6]), "locs": np.array([[-2.0], [2.0]]), "scales": np.array([[1.0], [0.8]])}


@pytest.fixture(scope="module")
def default_fits(request):
    device = request.config.getoption("--device")
    return zoo.compare("gmm", guides=["mean_field", "auto_normal"], device=device, progress=False, seed=3,
                       steps=600, num_eval_samples=300, num_elbo_particles=200, draw_figures=False)


def test_default_fit_recovers_the_true_mixture(default_fits):
    table = default_fits.table.set_index("guide")
    for guide in ("mean_field", "auto_normal"):
        row = table.loc[guide]
        assert row["status"] == "ok"
        assert row["weight_error"] < 0.05, row
        assert row["loc_error"] < 0.1, row
        assert row["scale_error"] < 0.1, row
        assert row["ari"] > 0.9, row
        assert row["test_lpd"] > -1.5, row


def test_held_out_lpd_matches_the_true_mixture_density(default_fits):
    """With 800 training points the posterior predictive density of the 200 held-out points is the true
    mixture's density there, up to estimation error of order (parameters / n)."""
    dataset = default_fits.dataset
    truth = {name: torch.as_tensor(value, dtype=torch.float32) for name, value in dataset.true_parameters.items()}
    test_points = dataset.test[0].cpu()
    exact = float(mixture_log_likelihood(test_points, truth["weights"], truth["locs"], truth["scales"]).mean())
    for guide in ("mean_field", "auto_normal"):
        assert default_fits.table.set_index("guide").loc[guide, "test_lpd"] == pytest.approx(exact, abs=0.03)


def test_enumerated_and_marginalised_fits_agree(device):
    results = {}
    for assignments in ("marginalised", "enumerated"):
        fitted = fit_model("gmm", guide="mean_field", model_options={"assignments": assignments}, seed=0, steps=300,
                         progress=False, device=device)
        results[assignments] = family.evaluate(fitted, family.load_data(), num_samples=200)
        assert fitted.settings.elbo == ("enum" if assignments == "enumerated" else "trace")
        assert sorted(latent_sites(fitted.score_model, fitted.args)) == sorted(GLOBAL_SITES)  # scored with assignments summed out
    assert results["enumerated"]["loc_error"] < 0.1
    assert results["enumerated"]["test_lpd"] == pytest.approx(results["marginalised"]["test_lpd"], abs=0.02)


def test_adjusted_rand_index_known_values():
    labels = np.array([0, 0, 1, 1, 2, 2])
    assert family.adjusted_rand_index(labels, labels) == pytest.approx(1.0)
    assert family.adjusted_rand_index(labels, np.array([5, 5, 3, 3, 4, 4])) == pytest.approx(1.0)
    # by hand: contingency [[2, 1, 0], [0, 1, 2]]; agreeing pairs 2, row pairs 6, column pairs 3, all pairs 15
    expected = 6 * 3 / 15
    assert family.adjusted_rand_index(np.array([0, 0, 0, 1, 1, 1]), np.array([0, 0, 1, 1, 2, 2])) == pytest.approx(
        (2 - expected) / ((6 + 3) / 2 - expected)
    )
    rng = np.random.default_rng(0)
    assert abs(family.adjusted_rand_index(rng.integers(0, 2, 2000), rng.integers(0, 2, 2000))) < 0.01


def test_parameter_errors_match_components_before_comparing():
    truth = {"weights": [0.3, 0.7], "locs": [[0.0, 0.0], [1.0, 1.0]], "scales": [[0.1, 0.1], [0.2, 0.2]]}
    swapped = {"weights": [0.68, 0.32], "locs": [[1.05, 1.0], [0.0, -0.02]], "scales": [[0.2, 0.2], [0.1, 0.13]]}
    errors = family.parameter_errors(swapped, truth)
    assert errors == pytest.approx({"weight_error": 0.02, "loc_error": 0.05, "scale_error": 0.03})


def test_posteriordb_draws_become_our_sites():
    draws = {"mu[1]": [-1.0, -2.0], "mu[2]": [1.0, 3.0], "sigma[1]": [0.5, 0.6], "sigma[2]": [0.7, 0.8], "theta": [0.2, 0.3]}
    samples = family.posteriordb_samples(draws)
    assert samples["weights"].flatten().tolist() == pytest.approx([0.2, 0.8, 0.3, 0.7])
    assert samples["locs"].shape == (2, 2, 1) and samples["locs"][1, :, 0].tolist() == [-2.0, 3.0]
    assert samples["scales"][0, :, 0].tolist() == pytest.approx([0.5, 0.7])


def laplace_reference_draws(values, num_draws=4000, seed=0):
    """posteriordb-named draws of the Laplace approximation of the low_dim_gauss_mix posterior (Stan's priors)
    at its mode; good to a fraction of a posterior sd for a few hundred well-separated points."""
    y = torch.as_tensor(values, dtype=torch.float64).reshape(-1, 1)

    def log_joint(theta):  # theta = (weight of component 1, mu[1], mu[2], sigma[1], sigma[2])
        weights = torch.stack([theta[0], 1 - theta[0]])
        log_prior = 4 * theta[0].log() + 4 * (1 - theta[0]).log() - theta[1:].pow(2).sum() / 8
        return log_prior + mixture_log_likelihood(y, weights, theta[1:3, None], theta[3:, None]).sum()

    def constrain(free):
        return torch.cat([free[:1].sigmoid(), free[1:3], free[3:].exp()])

    start = [TRUE_1D["weights"][0], *TRUE_1D["locs"][:, 0], *TRUE_1D["scales"][:, 0]]
    free = torch.tensor(start, dtype=torch.float64)
    free = torch.cat([free[:1].logit(), free[1:3], free[3:].log()]).requires_grad_()
    optimizer = torch.optim.LBFGS([free], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = -log_joint(constrain(free))
        loss.backward()
        return loss

    optimizer.step(closure)
    mode = constrain(free.detach())
    covariance = torch.linalg.inv(-torch.autograd.functional.hessian(log_joint, mode))
    draws = np.random.default_rng(seed).multivariate_normal(mode.numpy(), covariance.numpy(), size=num_draws)
    return {name: draws[:, j] for j, name in enumerate(["theta", "mu[1]", "mu[2]", "sigma[1]", "sigma[2]"])}


@pytest.fixture(scope="module")
def posteriordb_folder(tmp_path_factory):
    values, _ = sample_mixture(TRUE_1D["weights"], TRUE_1D["locs"], TRUE_1D["scales"], 300, seed=5)
    folder = tmp_path_factory.mktemp("low_dim_gauss_mix")
    return write_posteriordb_mixture(str(folder), values[:, 0], laplace_reference_draws(values[:, 0]))


def test_reference_distances_on_generated_posteriordb_data(posteriordb_folder, device):
    result = zoo.compare("gmm", guides=["mean_field", "auto_mvn", "auto_delta"], data="posteriordb:" + posteriordb_folder,
                         device=device, progress=False, steps=500, restarts=2, num_eval_samples=500, num_elbo_particles=200,
                         draw_figures=False)
    assert result.reference is not None and result.reference.kind == "posteriordb"
    table = result.table.set_index("guide")
    for guide in ("mean_field", "auto_mvn"):
        assert table.loc[guide, "mean_error_sd"] < 0.6, table.loc[guide]
        assert 0.4 < table.loc[guide, "std_ratio"] < 1.6, table.loc[guide]
        assert table.loc[guide, "w1_sd"] < 0.6, table.loc[guide]
    assert table.loc["auto_delta", "std_ratio"] == pytest.approx(0.0, abs=1e-6)
    model_kwargs = result.setup.model_kwargs
    assert model_kwargs["ordered"] and model_kwargs["priors"] == family.POSTERIORDB_PRIORS


@pytest.mark.parametrize("guide", GUIDES)
def test_command_line_runs_every_guide_tiny(guide, tmp_path, capsys):
    status = run_command_line(["gmm", "--guide", guide, "--fast", "--no-progress", "--out", str(tmp_path), "--eval-samples", "20"])
    assert status == 0
    printed = capsys.readouterr().out
    assert guide in printed and "results:" in printed
    run_dir = next((tmp_path / "gmm").iterdir())
    assert (run_dir / "components.png").exists() and (run_dir / "elbo_traces.png").exists()


@pytest.mark.parametrize("assignments", ["marginalised", "enumerated"])
def test_command_line_with_user_csv_components_and_assignments(assignments, tmp_path, capsys):
    points, _ = sample_mixture([0.3, 0.3, 0.4], [[0, 0, 0], [3, 3, 0], [0, 3, 3]], np.full((3, 3), 0.4), 150, seed=1)
    path = tmp_path / "three.csv"
    np.savetxt(path, points, delimiter=",")
    status = run_command_line(["gmm", "--data", str(path), "--components", "3", "--assignments", assignments, "--ordered", "yes",
                       "--guide", "mean_field", "--guide", "auto_normal", "--fast", "--no-progress", "--out", str(tmp_path)])
    assert status == 0
    assert "mean_field" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv,words",
    [
        (["--components", "0"], "--components must be an integer >= 1"),
        (["--data", "MISSING.csv"], "check the path"),
    ],
)
def test_command_line_bad_input_exits_2_with_a_clear_line(argv, words, tmp_path, capsys):
    argv = [arg.replace("MISSING", str(tmp_path / "missing")) for arg in argv]
    assert run_command_line(["gmm", *argv, "--fast", "--no-progress", "--out", str(tmp_path)]) == 2
    assert words in capsys.readouterr().err


def test_bad_data_gives_clear_errors(tmp_path):
    with pytest.raises(DataError, match="NaN"):
        fit_model("gmm", data=np.array([[0.0, 1.0], [np.nan, 1.0], [2.0, 2.0]]), steps=2, progress=False)
    with pytest.raises(DataError, match=r"2-D array \(n, d\)"):
        fit_model("gmm", data=np.zeros(10), steps=2, progress=False)
    with pytest.raises(ZooError, match="--components"):
        family.setup(family.load_data(), components=0)
