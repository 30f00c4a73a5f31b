"""The ``autorec`` family: every row through compare and the command line with tiny settings, its scores
against hand computations, minibatch epochs over items, bad options as one clear line, and its notebook."""

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import pyro_vi_zoo as zoo
import pyro_vi_zoo.registry as registry
from pyro_vi_zoo.cli import main
from pyro_vi_zoo.data.ratings import ratings_dataset, write_movielens_100k
from pyro_vi_zoo.engine.batches import EpochBatches
from pyro_vi_zoo.errors import DataError, ZooError
from pyro_vi_zoo.families import autorec as family
from pyro_vi_zoo.models.autorec import weight_decay_for_prior_scale

NOTEBOOKS = Path(__file__).parent.parent / "notebooks"
ROWS = ["auto_delta", "mean_field", "auto_normal", "last_layer", "item_mean"]
TINY = {"hidden": 8}


@pytest.fixture(autouse=True)
def registered(monkeypatch):
    """The registry learns the family here until registry.py lists it."""
    monkeypatch.setitem(registry.FAMILY_MODULES, "autorec", "pyro_vi_zoo.families.autorec")


# ----------------------------------------------------------------------------------------------- hand computations


@pytest.fixture
def tiny(device):
    """Users 1..4, items 10, 20, 30. Item 10 has 3 training ratings, item 20 two, item 30 none;
    user 4 has none. Test: (user 4, item 10) cold user, (3, 20) warm, (1, 30) cold item."""
    train = [(1, 10, 5), (2, 10, 4), (3, 10, 5), (1, 20, 1), (2, 20, 2)]
    test = [(4, 10, 3), (3, 20, 1), (1, 30, 4)]
    return ratings_dataset(train, test, rating_scale=(1, 5)).to(device)


def test_held_out_ratings_mark_cold_starts_and_popularity(tiny):
    ratings = family.held_out_ratings(tiny)
    assert ratings.targets.tolist() == [3.0, 1.0, 4.0]  # row-major: item 10, 20, 30
    assert ratings.cold.tolist() == [True, False, True]
    assert ratings.popularity.tolist() == [3, 2, 0]
    by_user = family.held_out_ratings(tiny.with_orientation("user"))  # rows are users: (1, 30), (3, 20), (4, 10)
    assert by_user.targets.tolist() == [4.0, 1.0, 3.0] and by_user.popularity.tolist() == [0, 2, 3]


def test_scores_clip_predictions_and_give_cold_starts_the_midpoint(tiny):
    ratings = family.held_out_ratings(tiny)
    means, sigma = torch.tensor([[6.0, 0.2, 9.0]]), 0.5
    predictions = family.predictions_from_draws(means, torch.tensor([sigma]), ratings, 1.0, 5.0)
    assert predictions.point.tolist() == [3.0, 1.0, 3.0]  # cold: midpoint; warm 0.2 clipped to 1
    row = family.prediction_scores(predictions, ratings)
    assert row["rmse"] == pytest.approx(math.sqrt(1 / 3)) and row["mae"] == pytest.approx(1 / 3)
    assert row["num_cold"] == 2
    # the one warm rating (1 under N(0.2, 0.5)) scores the density and the interval 0.2 ± 1.645 · 0.5
    assert row["test_lpd"] == pytest.approx(float(torch.distributions.Normal(0.2, sigma).log_prob(torch.tensor(1.0))))
    assert row["coverage_90"] == 1.0 and row["width_90"] == pytest.approx(2 * family.Z_90 * sigma, abs=1e-9)
    assert row["rmse_items_1_5"] == 0.0  # item 20 (2 training ratings): clipped prediction 1, rating 1
    assert all(math.isnan(row[f"rmse_items_{label}"]) for label in ("6_20", "21_50", "51_150", "151_plus"))


def test_popularity_buckets():
    counts = torch.tensor([0, 1, 5, 6, 20, 21, 50, 51, 150, 151, 5000])
    assert family.popularity_bucket(counts).tolist() == [-1, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert family.popularity_labels() == ("1_5", "6_20", "21_50", "51_150", "151_plus")
    assert family.popularity_labels((1, 10)) == ("1_9", "10_plus")


def test_mixture_intervals_coverage_and_calibration(device):
    generator = torch.Generator().manual_seed(0)
    normal = torch.distributions.Normal(0.0, 1.0)
    means = torch.randn(3, 400, generator=generator).to(device)
    # equal components: the mixture is one Normal, so the quantiles are mean ± z sigma
    same = means[:1].expand(4, -1).double()
    sigmas = torch.full_like(same, 0.7)
    lower = family.mixture_quantile(same, sigmas, 0.05)
    torch.testing.assert_close(lower, same[0] - family.Z_90 * 0.7, atol=1e-9, rtol=0)
    # two far-apart components: the median lies between them, where each has half its mass beyond
    pair = torch.tensor([[-5.0], [5.0]], dtype=torch.float64)
    median = family.mixture_quantile(pair, torch.ones_like(pair), 0.5)
    assert abs(float(median)) < 1e-9
    upper = family.mixture_quantile(pair, torch.ones_like(pair), 0.95)  # 0.5 Φ(u + 5) + 0.5 Φ(u − 5) = 0.95
    assert float(0.5 * normal.cdf(upper + 5) + 0.5 * normal.cdf(upper - 5)) == pytest.approx(0.95, abs=1e-9)
    # coverage of targets drawn from the predictive itself is near nominal, and the PIT curve agrees
    rows = torch.arange(400)
    targets = (means + 0.7 * torch.randn(3, 400, generator=generator).to(device))[0].double().cpu()
    ratings = family.HeldOutRatings(rows, rows, targets, torch.zeros(400, dtype=torch.bool), torch.full((400,), 10))
    predictions = family.predictions_from_draws(means[:1], torch.tensor([0.7]), ratings, -100.0, 100.0)
    row = family.prediction_scores(predictions, ratings)
    curve = family.calibration(predictions, ratings)
    assert curve[family.CALIBRATION_LEVELS.index(0.9)] == pytest.approx(row["coverage_90"])
    assert 0.85 < row["coverage_90"] < 0.95 and np.all(np.diff(curve) >= 0)


def test_item_mean_baseline_by_hand(tiny):
    baseline = family.item_mean_baseline(tiny, None, None)
    # item means: 10 -> 14/3, 20 -> 1.5; training residual RMS from (1/3, -2/3, 1/3, -1/2, 1/2)
    sigma = math.sqrt((1 / 9 + 4 / 9 + 1 / 9 + 1 / 4 + 1 / 4) / 5)
    assert baseline.row["noise_scale_fitted"] == pytest.approx(sigma)
    assert baseline.fitted.point.tolist() == pytest.approx([3.0, 1.5, 3.0])
    assert baseline.row["rmse"] == pytest.approx(math.sqrt((0.25 + 1) / 3))


# ----------------------------------------------------------------------------------------------- data and setup


def test_load_data_splits_and_orientation(tmp_path, device):
    default = family.load_data()
    assert default.name == "generated" and (default.num_users, default.num_items) == (399, 299)  # of 400 x 300 ids
    other = family.load_data(split=2)  # a number k is split uk: another random split of the same ratings
    assert other.name == "generated:split1" and other.num_train_ratings == default.num_train_ratings
    assert not torch.equal(other.test[2], default.test[2])
    users = family.load_data(orientation="user").to(device)
    assert users.orientation == "user" and users.num_rows == 399
    folder = write_movielens_100k(tmp_path / "ml", split="u2", num_users=30, num_items=20, density=0.3)
    from_dir = family.load_data(dataset="movielens-100k", data_dir=folder, split="u2")
    from_data = family.load_data(str(folder), split="2")  # --data with a folder; a number k is split uk
    assert from_dir.name == from_data.name == "movielens-100k:u2" and torch.equal(from_dir.test[2], from_data.test[2])
    arrays = family.load_data(([(1, 1, 4), (2, 1, 2), (1, 2, 5)], [(2, 2, 3)]))
    assert arrays.num_cold == 0 and arrays.num_test_ratings == 1


@pytest.mark.parametrize("options, message", [
    (dict(dataset="netflix"), "unknown --dataset 'netflix'"),
    (dict(split="ua"), "ua and ub exist for movielens-100k only"),
    (dict(data_dir="somewhere"), "--data-dir is not read for the generated ratings"),
    (dict(orientation="diagonal"), "unknown --orientation"),
])
def test_bad_data_options_are_data_errors(options, message):
    with pytest.raises(DataError, match=message):
        family.load_data(**options)


def test_setup_maps_the_prior_scale_to_lambda_and_batches_items(device):
    dataset = family.load_data().to(device)
    setup = family.setup(dataset, hidden=8, prior_scale=0.2, noise_scale="0.8")
    assert setup.model_kwargs["weight_decay"] == pytest.approx(2 * 0.8**2 / 0.2**2)
    assert setup.model_kwargs["noise_scale"] == 0.8 and setup.compared_sites == ()
    assert float(setup.model.encoder.weight_prior_scale) == pytest.approx(0.2)
    learned = family.setup(dataset, hidden=8, noise_scale="learned")
    assert learned.model.learns_noise and learned.compared_sites == ("sigma",)
    assert math.isnan(learned.model_kwargs["weight_decay"])
    noise, scale = family.VALIDATED_DEFAULTS["generated"]
    defaults = family.setup(dataset, hidden=8).model_kwargs
    assert (defaults["noise_scale"], defaults["prior_scale"]) == (noise, scale)
    assert defaults["weight_decay"] == pytest.approx(weight_decay_for_prior_scale(scale, noise))


def test_other_data_get_the_movielens_defaults(tmp_path, device):
    folder = write_movielens_100k(tmp_path / "ml", num_users=30, num_items=20, density=0.3)
    defaults = family.setup(family.load_data(str(folder)).to(device), hidden=8).model_kwargs
    assert (defaults["noise_scale"], defaults["prior_scale"]) == family.VALIDATED_DEFAULTS["movielens"] == (0.92, 0.092)
    assert defaults["weight_decay"] == pytest.approx(200.0)


def test_minibatch_epochs_visit_every_item_once(device):
    dataset = family.load_data().to(device)
    make_batch = family.setup(dataset, hidden=8).make_batch
    batches = EpochBatches(make_batch, dataset.num_train, 64, dataset.device)
    feeder = batches.feeder()
    seen = []
    for step in range(batches.batches_per_epoch):
        (inputs, targets, mask), kwargs = feeder.batch(step)
        rows = kwargs["subsample"]
        assert kwargs["num_rows"] == 299 and inputs.shape == (64, 399)
        assert torch.equal(inputs, dataset.train[0][rows]) and torch.equal(mask, dataset.train[2][rows])
        seen.append(rows)
    seen = torch.cat(seen)
    assert len(seen) == 4 * 64 and len(torch.unique(seen)) == len(seen)  # 299 // 64 batches, no item twice
    next_epoch = torch.cat([feeder.batch(step)[1]["subsample"] for step in range(4, 8)])
    assert not torch.equal(next_epoch, seen)  # a fresh order each epoch


@pytest.mark.parametrize("options, message", [
    (dict(hidden=0), "--hidden must be a positive int"),
    (dict(prior_scale=-1.0), "--prior-scale must be a positive float"),
    (dict(noise_scale="loud"), "--noise-scale must be 'learned' or a positive number"),
    (dict(activation="swish"), "unknown --activation 'swish'"),
])
def test_bad_model_options_are_zoo_errors(options, message, device):
    with pytest.raises(ZooError, match=message):
        family.setup(family.load_data().to(device), **options)


# ----------------------------------------------------------------------------------------------- through the runner


def test_compare_runs_every_row_and_draws_the_figures(tmp_path, device):
    comparison = zoo.compare("autorec", fast=True, model_options=TINY, out=tmp_path, num_eval_samples=12,
                             device=device, progress=False, seed=0)
    table = comparison.table
    assert list(table["guide"]) == ROWS and (table["status"] == "ok").all()
    assert (table.loc[table["guide"] != "item_mean", "steps"] == 2 * (299 // 32)).all()  # 2 epochs of 32 items
    for column in ("rmse", "mae", "test_lpd", "coverage_90", "width_90", "rmse_items_1_5", "num_cold",
                   "wall_time_s"):
        assert table[column].notna().all(), column
    assert (table["num_cold"] == comparison.dataset.num_cold).all()
    draws = table.set_index("guide")["predictive_draws"]
    assert draws["auto_delta"] == 1 and (draws[["mean_field", "auto_normal", "last_layer"]] == 12).all()
    has_elbo = table.set_index("guide")["elbo"].notna()
    assert has_elbo[["mean_field", "auto_normal"]].all() and not has_elbo[["auto_delta", "last_layer"]].any()
    assert ((table["rmse"] > 0.5) & (table["rmse"] < 1.5)).all()
    (run_dir,) = (tmp_path / "autorec").iterdir()
    for figure in ("calibration", "rmse_by_popularity", "learning_curves", "elbo_traces"):
        assert (run_dir / f"{figure}.png").stat().st_size > 1000
    assert pd.read_csv(run_dir / "results.csv")["weight_decay"].iloc[0] == pytest.approx(
        weight_decay_for_prior_scale(*reversed(family.VALIDATED_DEFAULTS["generated"])))


def test_cli_runs_u_autorec_with_learned_noise(tmp_path, device, capsys):
    status = main(["autorec", "--fast", "--guide", "auto_delta", "--guide", "last_layer", "--hidden", "8",
                   "--orientation", "user", "--noise-scale", "learned", "--prior-scale", "0.3", "--split", "u2",
                   "--activation", "tanh", "--output-activation", "identity", "--eval-samples", "10",
                   "--out", str(tmp_path), "--no-progress", "--device", device])
    assert status == 0
    (run_dir,) = (tmp_path / "autorec").iterdir()
    table = pd.read_csv(run_dir / "results.csv")
    assert list(table["guide"]) == ["auto_delta", "last_layer"] and (table["status"] == "ok").all()
    assert (table["num_train"] == 399).all() and (table["dataset"] == "generated:split1").all()  # rows are users
    assert (table["noise_scale"] == "learned").all() and (table["activation"] == "tanh").all()
    assert (run_dir / "marginals.png").is_file()  # sigma's posterior, learned
    assert "rmse" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--noise-scale", "loud"], "--noise-scale must be 'learned' or a positive number"),
    (["--dataset", "netflix"], "unknown --dataset 'netflix'"),
    (["--hidden", "0"], "--hidden must be a positive int"),
    (["--batch-size", "32", "--epochs", "0"], "epochs must be a positive integer"),
])
def test_cli_bad_options_give_one_clear_line(argv, message, tmp_path, capsys):
    assert main(["autorec", "--fast", "--out", str(tmp_path), "--no-progress"] + argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
