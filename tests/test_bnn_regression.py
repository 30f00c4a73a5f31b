"""The bnn_regression family through the runner and the command line: posterior quality on the cubic
data against the maximum-likelihood network, UCI data through the options, and every guide end to end."""

import math

import pandas as pd
import pytest
import torch

from pyro_vi_zoo import compare
from pyro_vi_zoo.data.regression import cubic_arrays
from pyro_vi_zoo.errors import DataError, ZooError
from pyro_vi_zoo.families import bnn_regression as family
from pyro_vi_zoo.cli import main
from test_uci_data import write_uci_folder

GUIDES = ["mean_field", "auto_normal", "auto_diag_normal", "auto_lowrank_mvn", "auto_delta", "mle"]


def run_cli(*argv):
    return main([str(a) for a in argv])


def only_results(out):
    (run_dir,) = (out / "bnn_regression").iterdir()
    return run_dir, pd.read_csv(run_dir / "results.csv")


@pytest.fixture(scope="module")
def cubic_comparison():
    """mean_field and mle on 2 000 points of the cubic data (1 600 to train), the same optimiser budget.

    At this size the weights are not pinned down by the data, which is where a
    posterior should pay off; with the full 8 000 training points a point
    estimate is as good on held-out points that interleave the training ones.
    """
    torch.set_num_threads(1)
    return compare("bnn_regression", guides=["mean_field", "mle"], data=cubic_arrays(2000), steps=3000,
                   num_particles=4, lr=0.01, seed=0, progress=False, num_eval_samples=1000,
                   num_elbo_particles=100, draw_figures=False)


def test_mean_field_covers_90_percent_of_held_out_points(cubic_comparison):
    row = cubic_comparison.table.set_index("guide").loc["mean_field"]
    assert row["status"] == "ok"
    assert 0.85 <= row["coverage_90"] <= 0.95
    assert row["rmse"] < 1.6  # the noise sd is 1.5: the network found the curve


def test_mean_field_beats_maximum_likelihood_on_held_out_density(cubic_comparison):
    table = cubic_comparison.table.set_index("guide")
    assert table.loc["mean_field", "test_lpd"] > table.loc["mle", "test_lpd"]
    # both are proper Gaussian-noise fits: within 0.1 nats of the true noise's density
    best_possible = -0.5 * math.log(2 * math.pi * 1.5**2) - 0.5
    assert (table["test_lpd"] > best_possible - 0.1).all()


def test_cli_runs_every_guide_and_draws_the_two_panel_figure(tmp_path, device):
    assert run_cli("bnn_regression", "--guide", "all", "--fast", "--hidden", "16", "--prior-scale", "1.0",
                   "--dataset", "cubic", "--out", tmp_path, "--no-progress", "--device", device) == 0
    run_dir, table = only_results(tmp_path)
    assert list(table["guide"]) == GUIDES
    assert (table["status"] == "ok").all() and (table["num_train"] == 8000).all()
    assert table[["test_lpd", "rmse", "coverage_90"]].notna().all().all()
    assert (run_dir / "mle_vs_posterior.png").stat().st_size > 1000


def test_cli_reads_a_uci_split_from_data_dir(tmp_path, device):
    write_uci_folder(tmp_path / "data" / "toy")
    assert run_cli("bnn_regression", "--dataset", "uci:toy", "--split", "2", "--data-dir", tmp_path / "data",
                   "--guide", "mean_field", "--guide", "mle", "--fast", "--out", tmp_path / "runs",
                   "--no-progress", "--device", device) == 0
    _, table = only_results(tmp_path / "runs")
    assert list(table["guide"]) == ["mean_field", "mle"]
    assert (table["num_train"] == 30).all() and (table["num_test"] == 10).all()
    assert (table["dataset"] == "toy").all() and (table["dataset_option"] == "uci:toy").all()
    assert (table["split"] == 2).all()


@pytest.mark.parametrize("argv, message", [
    (("--dataset", "iris"), "unknown --dataset 'iris'"),
    (("--dataset", "uci:toy", "--data-dir", "/nonexistent"), "missing file"),
    (("--hidden", "50,x"), "--hidden must be"),
    (("--prior-scale", "-1"), "--prior-scale must be positive"),
])
def test_bad_options_exit_2_with_a_clear_line(argv, message, tmp_path, capsys):
    assert run_cli("bnn_regression", *argv, "--fast", "--out", tmp_path, "--no-progress") == 2
    assert message in capsys.readouterr().err


def test_load_data_variants(tmp_path):
    write_uci_folder(tmp_path / "toy")
    from_folder = family.load_data(str(tmp_path / "toy"), split=1)
    from_name = family.load_data(dataset="uci:toy", split=1, data_dir=str(tmp_path))
    assert torch.equal(from_folder.train[0], from_name.train[0]) and from_name.split == 1
    cubic = family.load_data()
    assert cubic.train[0].shape == (8000, 1) and cubic.feature_map.kind == "linear"
    pair = family.load_data(cubic_arrays(100))
    assert pair.train[0].shape == (80, 1)
    with pytest.raises(DataError, match="not a folder in the UCI split format"):
        family.load_data(str(tmp_path))


def test_setup_parses_hidden_layers():
    cubic = family.load_data(cubic_arrays(50))
    assert family.setup(cubic).model_kwargs == {"hidden": "50", "prior_scale": 1.0, "noise_prior_scale": 1.0}
    assert family.setup(cubic, hidden="32,16", prior_scale=0.5).model.hidden == (32, 16)
    with pytest.raises(ZooError, match="--hidden must be comma-separated positive layer widths"):
        family.setup(cubic, hidden="0")


def test_auto_guides_start_from_a_random_network_not_the_prior_mean():
    dataset = family.load_data(cubic_arrays(50))
    setup = family.setup(dataset, hidden="20")
    init, net = setup.auto_guide_options()["init_loc_fn"], setup.model
    import pyro

    trace = pyro.poutine.trace(net).get_trace(*dataset.train)
    weight = init(trace.nodes["layers.1.weight"])
    assert weight.shape == (1, 20) and 0 < float(weight.abs().max()) <= 1 / math.sqrt(20)
    assert len(torch.unique(weight)) == 20
    assert float(init(trace.nodes["sigma"])) > 0


def test_mle_row_is_scored_in_original_units():
    dataset = family.load_data(cubic_arrays(500))
    settings = type("Settings", (), {"steps": 400, "lr": 0.02, "lr_decay": 0.1, "batch_size": None, "seed": 0})
    baseline = family.mle_baseline(dataset, family.setup(dataset, hidden="16"), settings)
    row = baseline.row
    assert row["rmse"] == pytest.approx(1.5, rel=0.25)
    assert row["width_90"] == pytest.approx(2 * 1.645 * 1.5, rel=0.25)
    assert 0.8 <= row["coverage_90"] <= 1.0 and math.isfinite(row["test_lpd"])
    assert isinstance(baseline.fitted, torch.nn.Module)  # the network itself comes back, for the figure
