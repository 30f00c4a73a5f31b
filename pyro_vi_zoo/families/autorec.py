"""The ``autorec`` family: Bayesian I-AutoRec on rating matrices, MAP against posteriors.

The model is I-AutoRec (Sedhain, Menon, Sanner and Xie, "AutoRec: Autoencoders
Meet Collaborative Filtering", WWW 2015) read as a Bayesian network
(:mod:`pyro_vi_zoo.models.autorec`): each item's vector of training ratings is
encoded and decoded, only observed ratings enter the Gaussian likelihood, and
the paper's weight decay ``lambda`` is a Normal prior of scale
``s = sigma sqrt(2 / lambda)`` on the weights. ``--orientation user`` gives
U-AutoRec (rows are users). Training runs by shuffled epochs over minibatches of
rows (``Setup.make_batch``): each batch's likelihood is scaled by rows / batch.

Rows of the table:

* ``auto_delta``: MAP. With the noise fixed (the default) its objective is the
  paper's ``sum (r - r_hat)^2 + lambda/2 (|W|^2 + |V|^2)`` up to a factor, so it
  is classic AutoRec trained by Adam.
* ``mean_field``: the hand-written Bayes-by-Backprop guide (a Normal per weight,
  softplus scales started at 0.01, locations as ``torch.nn.Linear`` starts them).
* ``auto_normal``: Pyro's AutoNormal, started at the same locations.
* ``last_layer``: MAP encoder, mean-field decoder: the posterior spread where the
  predictions are made, with a quarter fewer parameters and less sampling noise.
* ``item_mean``: each item's mean training rating with the training residual
  spread as noise; the floor any collaborative model must beat.

Scores (:class:`AutoRecScoring`): test RMSE and MAE of the posterior-mean
prediction clipped to the rating scale, where cold-start test ratings (user or
item without training ratings) get the paper's default rating, the midpoint of
the scale; the log predictive density per rating, 90% interval coverage and
width, and RMSE by item popularity, over the warm test ratings (the cold ones
have no model prediction); the training ELBO for guides with a density
throughout; wall time and time per epoch. Figures: calibration (nominal against
empirical coverage), RMSE by item popularity, learning curves.
"""

import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from matplotlib.figure import Figure
from pyro.infer.autoguide import AutoDelta

from ..data.ratings import (
    DATASETS,
    ORIENTATIONS,
    RatingsDataset,
    generated_ratings,
    load_ratings,
    ratings_dataset,
    read_movielens_100k,
)
from ..errors import DataError, ZooError
from ..family import Family, Option, Setup
from ..guides.autorec import autorec_init_loc_fn, autorec_last_layer_guide, autorec_mean_field
from ..models.autorec import ACTIVATIONS, BayesianAutoRec, weight_decay_for_prior_scale
from ..scoring import Baseline
from ..scoring.diagnostics import importance_log_weights

DEFAULT_HIDDEN = 500
# Default (noise sigma, weight prior scale s), chosen on 10% validation parts of training ratings as
# benchmarks/autorec.py does: lambda by MAP's validation RMSE, that RMSE as sigma, s = sigma sqrt(2 / lambda).
# MovieLens (and any other data): lambda = 200 of (25, 50, 100, 200, 400) on ML-100K u1.base, 30 epochs
# of 128 items, validation RMSE 0.918. Generated: lambda = 50 of (6.25, ..., 200) with this family's
# fit settings, validation RMSE 0.856. The smaller data set wants the weaker prior.
VALIDATED_DEFAULTS = {"movielens": (0.92, 0.092), "generated": (0.86, 0.17)}
DEFAULT_NOISE_SCALE, DEFAULT_PRIOR_SCALE = VALIDATED_DEFAULTS["movielens"]
BIAS_PRIOR_SCALE = 10.0
# the embedded ratings: 400 users x 300 items, 15% rated (18 000 ratings); sparser generated data
# leaves AutoRec nothing to learn beyond the item means (its inputs are the users' ratings of an item)
GENERATED = dict(num_users=400, num_items=300, density=0.15, seed=0)
POPULARITY_EDGES = (1, 6, 21, 51, 151)
CALIBRATION_LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
Z_90 = 1.6448536269514722  # standard Normal 95% quantile


# ----------------------------------------------------------------------------------------------- data


def split_seed(split) -> int:
    """The seed of a random split named ``u1``..``u5`` (or 1..5): 0..4 (MovieLens 1M, generated ratings)."""
    text = str(split)
    number = text[1:] if text.startswith("u") else text
    if number not in ("1", "2", "3", "4", "5"):
        raise DataError(f"unknown split {split!r} for a random split; use u1..u5 (seeds 0..4); ua and ub "
                        "exist for movielens-100k only.")
    return int(number) - 1


def load_data(data=None, *, dataset: Optional[str] = None, split=None, data_dir: Optional[str] = None,
              orientation: str = "item") -> RatingsDataset:
    """A rating matrix with its train/test split, rows as items (I-AutoRec) or users (``orientation="user"``).

    ``dataset``: ``generated`` (the embedded default, :data:`GENERATED`), ``movielens-100k``
    (split ``u1``..``u5``, ``ua``, ``ub``; default ``u1``) or ``movielens-1m`` (random 90/10
    split ``u1``..``u5`` = seeds 0..4), read from ``data_dir`` or downloaded once to the cache.
    ``data`` may instead be a folder in the MovieLens 100K format, or a pair ``(train, test)``
    of arrays with rows ``(user, item, rating[, timestamp])``. A split given as a number k
    means ``u<k>``.
    """
    if orientation not in ORIENTATIONS:
        raise DataError(f"unknown --orientation {orientation!r}; use item (I-AutoRec) or user (U-AutoRec).")
    if split is not None and str(split).isdigit():
        split = f"u{split}"
    if data is not None:
        return _user_ratings(data, split, orientation)
    dataset = dataset or "generated"
    if dataset not in DATASETS:
        raise DataError(f"unknown --dataset {dataset!r} for autorec; choose one of: {', '.join(DATASETS)}.")
    if dataset == "movielens-100k":
        return load_ratings(dataset, data_dir, split=split or "u1", orientation=orientation)
    seed = split_seed(split or "u1")
    if dataset == "movielens-1m":
        return load_ratings(dataset, data_dir, seed=seed, orientation=orientation)
    if data_dir is not None:
        raise DataError("--data-dir is not read for the generated ratings; add --dataset movielens-100k "
                        "or --dataset movielens-1m.")
    return generated_ratings(**GENERATED, split_seed=seed, orientation=orientation)


def _user_ratings(data, split, orientation) -> RatingsDataset:
    if isinstance(data, (str, os.PathLike)):
        return read_movielens_100k(data, split or "u1", orientation=orientation)
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return ratings_dataset(data[0], data[1], orientation=orientation)
    raise DataError("autorec data must be None (the generated ratings), a folder in the MovieLens 100K format "
                    "(u1.base/u1.test...), or a pair (train, test) of arrays with rows (user, item, rating).")


# ----------------------------------------------------------------------------------------------- model


def positive(value, flag: str, kind=float):
    """``value`` as a positive ``kind``, or a :class:`ZooError` naming the flag."""
    try:
        number = kind(value)
    except (TypeError, ValueError):
        number = None
    if number is None or not number > 0 or not math.isfinite(number):
        raise ZooError(f"{flag} must be a positive {kind.__name__}, got {value!r}.")
    return number


def validated_defaults(dataset: RatingsDataset) -> Tuple[float, float]:
    """The default (noise sigma, prior scale s) for ``dataset``: the generated ratings' own, else MovieLens'."""
    return VALIDATED_DEFAULTS["generated" if dataset.source == "generated" else "movielens"]


def parse_noise_scale(value, default: float = DEFAULT_NOISE_SCALE) -> Optional[float]:
    """``"learned"`` -> ``None`` (sigma gets a HalfNormal prior); a number -> that fixed sigma; ``None`` -> ``default``."""
    if value is None:
        return default
    if isinstance(value, str) and value.strip().lower() == "learned":
        return None
    try:
        return positive(value, "--noise-scale")
    except ZooError:
        message = f"--noise-scale must be 'learned' or a positive number of rating units, got {value!r}."
        raise ZooError(message) from None


def _activation(value, flag: str, default: str) -> str:
    value = default if value is None else value
    if value not in ACTIVATIONS:
        raise ZooError(f"unknown {flag} {value!r}; choose one of: {', '.join(ACTIVATIONS)}.")
    return value


def setup(dataset: RatingsDataset, *, hidden=None, prior_scale=None, noise_scale=None, activation=None,
          output_activation=None) -> Setup:
    """One :class:`BayesianAutoRec` on the data's device, its guides, and item minibatches.

    Defaults: 500 sigmoid hidden units, identity output, and the noise (fixed) and weight prior
    scale validated for the data (:data:`VALIDATED_DEFAULTS`: sigma 0.92, s 0.092, lambda 200
    for MovieLens and other data; sigma 0.86, s 0.17, lambda 50 for the generated ratings);
    ``noise_scale="learned"`` puts a HalfNormal(1) prior on sigma instead.
    """
    default_noise, default_prior_scale = validated_defaults(dataset)
    hidden = positive(DEFAULT_HIDDEN if hidden is None else hidden, "--hidden", int)
    prior_scale = positive(default_prior_scale if prior_scale is None else prior_scale, "--prior-scale")
    noise = parse_noise_scale(noise_scale, default_noise)
    activation = _activation(activation, "--activation", "sigmoid")
    output_activation = _activation(output_activation, "--output-activation", "identity")
    inputs, _, mask = dataset.train
    with torch.device(inputs.device):
        net = BayesianAutoRec(dataset.num_columns, hidden, prior_scale, BIAS_PRIOR_SCALE, noise_scale=noise,
                              activation=activation, output_activation=output_activation)
    mean_rating = float(inputs[mask].mean())
    start_noise = default_noise if noise is None else noise
    guide_options = dict(init_output_bias=mean_rating, init_noise_scale=start_noise)
    return Setup(
        model=net,
        guides={"mean_field": lambda: autorec_mean_field(net, **guide_options),
                "last_layer": lambda: autorec_last_layer_guide(net, **guide_options)},
        model_kwargs={"hidden": hidden, "prior_scale": prior_scale, "bias_prior_scale": BIAS_PRIOR_SCALE,
                      "noise_scale": "learned" if noise is None else noise,
                      "weight_decay": math.nan if noise is None else weight_decay_for_prior_scale(prior_scale, noise),
                      "activation": activation, "output_activation": output_activation,
                      "orientation": dataset.orientation},
        auto_guide_options=lambda: {"init_loc_fn": autorec_init_loc_fn(net, mean_rating, start_noise)},
        compared_sites=("sigma",) if noise is None else (),
        batch_keyword=None,
        make_batch=row_batches(dataset),
    )


def row_batches(dataset: RatingsDataset):
    """``make_batch(rows)``: the rows' (inputs, targets, mask), with the plate's size and the rows as its subsample."""
    inputs, targets, mask = dataset.train
    num_rows = dataset.num_rows

    def make_batch(rows: torch.Tensor):
        return (inputs[rows], targets[rows], mask[rows]), {"num_rows": num_rows, "subsample": rows}

    return make_batch


# ----------------------------------------------------------------------------------------------- test ratings


@dataclass(frozen=True)
class HeldOutRatings:
    """The test ratings as flat vectors: matrix positions, values, cold starts, and their item's popularity
    (training ratings of the item)."""

    rows: torch.Tensor
    columns: torch.Tensor
    targets: torch.Tensor
    cold: torch.Tensor
    popularity: torch.Tensor

    @property
    def warm(self) -> torch.Tensor:
        return ~self.cold


def held_out_ratings(dataset: RatingsDataset) -> HeldOutRatings:
    """Every test rating of ``dataset`` in row-major order (on the CPU)."""
    _, targets, mask = (a.cpu() for a in dataset.test)
    rows, columns = mask.nonzero(as_tuple=True)
    items = rows if dataset.orientation == "item" else columns
    counts = dataset.train_counts if dataset.orientation == "item" else dataset.column_counts
    return HeldOutRatings(rows, columns, targets[rows, columns].double(), dataset.test_cold.cpu()[rows, columns],
                       torch.as_tensor(counts, device="cpu")[items])


@dataclass(frozen=True)
class RatingPredictions:
    """One row's predictive at every test rating (float64, CPU; ``nan`` at cold starts except ``point``).

    ``point``: posterior-mean prediction clipped to the scale, the default rating at cold starts;
    ``log_density``: log (1/S) sum_s N(r | m_s, sigma_s); ``pit``: the predictive CDF at the rating;
    ``lower``, ``upper``: the central 90% predictive interval (exact quantiles of the mixture).
    """

    point: torch.Tensor
    log_density: torch.Tensor
    pit: torch.Tensor
    lower: torch.Tensor
    upper: torch.Tensor
    num_draws: int


def predictions_from_draws(means: torch.Tensor, sigmas: torch.Tensor, ratings: HeldOutRatings, rating_min: float,
                           rating_max: float) -> RatingPredictions:
    """The predictive of a mixture of Normals N(means[s], sigmas[s]) over ``S`` draws, at every test rating.

    ``means`` is ``(S, n)``, ``sigmas`` ``(S,)``. Cold starts get the midpoint rating and no density.
    """
    means, sigmas = means.double().cpu(), sigmas.double().cpu().reshape(-1, 1).expand_as(means)
    targets, cold = ratings.targets, ratings.cold
    default = (rating_min + rating_max) / 2.0
    point = torch.where(cold, torch.full_like(targets, default), means.mean(0).clamp(rating_min, rating_max))
    normal = torch.distributions.Normal(means, sigmas)
    log_density = torch.logsumexp(normal.log_prob(targets), 0) - math.log(means.shape[0])
    pit = mixture_cdf(targets, means, sigmas)
    lower = mixture_quantile(means, sigmas, 0.05)
    upper = mixture_quantile(means, sigmas, 0.95)
    missing = lambda values: values.masked_fill(cold, math.nan)
    return RatingPredictions(point, missing(log_density), missing(pit), missing(lower), missing(upper),
                             int(means.shape[0]))


def mixture_cdf(value: torch.Tensor, means: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """P(r <= value) under the equal-weight mixture of N(means[s], sigmas[s]), per column."""
    return torch.special.ndtr((value - means) / sigmas).mean(0)


def mixture_quantile(means: torch.Tensor, sigmas: torch.Tensor, probability: float,
                     iterations: int = 50) -> torch.Tensor:
    """The ``probability`` quantile of each column's Normal mixture, by bisection on its CDF."""
    low = (means - 10 * sigmas).min(0).values
    high = (means + 10 * sigmas).max(0).values
    for _ in range(iterations):
        middle = (low + high) / 2
        below = mixture_cdf(middle, means, sigmas) < probability
        low, high = torch.where(below, middle, low), torch.where(below, high, middle)
    return (low + high) / 2


def popularity_labels(edges: Sequence[int] = POPULARITY_EDGES) -> Tuple[str, ...]:
    """Bucket names ``1_5``, ``6_20``, ..., ``151_plus`` for training-rating counts in [edges[k], edges[k+1])."""
    bounds = list(edges) + [None]
    return tuple(f"{low}_{high - 1}" if high is not None else f"{low}_plus" for low, high in zip(bounds, bounds[1:]))


def popularity_bucket(popularity: torch.Tensor, edges: Sequence[int] = POPULARITY_EDGES) -> torch.Tensor:
    """Each rating's bucket index (-1 below the first edge: items with no training rating)."""
    edges = torch.as_tensor(edges, dtype=popularity.dtype, device=popularity.device)
    return torch.bucketize(popularity, edges, right=True) - 1


def prediction_scores(predictions: RatingPredictions, ratings: HeldOutRatings,
                      edges: Sequence[int] = POPULARITY_EDGES) -> Dict[str, float]:
    """RMSE and MAE over every test rating; log density, 90% coverage and width over the warm ones;
    RMSE of the warm ratings by their item's popularity bucket; the count of cold-start ratings."""
    error = predictions.point - ratings.targets
    warm = ratings.warm
    inside = (ratings.targets >= predictions.lower) & (ratings.targets <= predictions.upper)
    row = {
        "rmse": _root_mean_square(error),
        "mae": float(error.abs().mean()),
        "test_lpd": _mean(predictions.log_density[warm]),
        "coverage_90": _mean(inside[warm].double()),
        "width_90": _mean((predictions.upper - predictions.lower)[warm]),
    }
    bucket = popularity_bucket(ratings.popularity, edges)
    for index, label in enumerate(popularity_labels(edges)):
        row[f"rmse_items_{label}"] = _root_mean_square(error[warm & (bucket == index)])
    row["num_cold"] = int(ratings.cold.sum())
    return row


def calibration(predictions: RatingPredictions, ratings: HeldOutRatings,
                levels: Sequence[float] = CALIBRATION_LEVELS) -> np.ndarray:
    """Empirical coverage of the central predictive interval at each nominal level, over warm ratings (from PIT)."""
    distance = (predictions.pit[ratings.warm] - 0.5).abs()
    return np.array([float((distance <= level / 2).double().mean()) if distance.numel() else math.nan
                     for level in levels])


def _root_mean_square(values: torch.Tensor) -> float:
    return float(values.pow(2).mean().sqrt()) if values.numel() else math.nan


def _mean(values: torch.Tensor) -> float:
    return float(values.mean()) if values.numel() else math.nan


# ----------------------------------------------------------------------------------------------- scoring a fit


def predictive_means(fit, dataset: RatingsDataset, ratings: HeldOutRatings, num_draws: int,
                     chunk: int = 10) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(S, n)`` reconstructions at the test ratings and ``(S,)`` noise scales for ``S`` posterior draws.

    Draws come from the fitted guide in chunks of ``chunk`` (a draw of every weight is a whole
    network); only the rows holding test ratings are reconstructed, from the training inputs.
    """
    net = fit.model
    inputs = dataset.test[0]
    rows = torch.unique(ratings.rows)
    local_rows = torch.searchsorted(rows, ratings.rows).to(inputs.device)
    columns = ratings.columns.to(inputs.device)
    batch = inputs[rows.to(inputs.device)]
    sites = list(net.site_shapes()) + (["sigma"] if net.learns_noise else [])
    means, sigmas = [], []
    for start in range(0, num_draws, chunk):
        size = min(chunk, num_draws - start)
        draws = fit.sample_posterior(size, sites)
        with torch.no_grad():
            means.append(net.predict_mean(batch, draws)[:, local_rows, columns].cpu())
        sigma = draws["sigma"] if net.learns_noise else net.noise().expand(size)
        sigmas.append(sigma.reshape(size).detach().cpu())
    return torch.cat(means), torch.cat(sigmas)


def has_point_masses(fit) -> bool:
    """Whether the fitted guide puts a point mass on some site (MAP, the last-layer guide's encoder):
    its "ELBO" then lacks those sites' entropy and is not a bound to compare."""
    if not fit.has_density or isinstance(fit.guide, AutoDelta):
        return True
    return bool(getattr(fit.guide, "point_sites", ()))


def epochs_run(fit, num_rows: int) -> float:
    """How many passes over the training rows the fit made (steps over batches per epoch)."""
    batch_size = fit.settings.batch_size
    batches_per_epoch = 1 if batch_size is None else max(1, num_rows // batch_size)
    return len(fit.losses) / batches_per_epoch


@dataclass(frozen=True)
class AutoRecScoring:
    """How the ``autorec`` family scores a fitted guide (see the module docstring for the columns).

    The shared global-latent scorer is not used: its ELBO and PSIS k̂ take 1000 importance
    samples of every weight over all training data (about 900 000 weights on MovieLens-100K,
    a whole network per sample), and k̂ in that many dimensions only says what is known, that
    a factorised guide is a poor importance proposal. Here the ELBO uses ``elbo_particles``
    draws, and the predictive ``min(num_eval_samples, max_draws)`` draws.

    Attributes:
        max_draws: most posterior draws for the predictive (each is a full reconstruction).
        elbo_particles: draws for the training ELBO (guides without point masses only).
        popularity_edges: lower edges of the item-popularity buckets (training ratings per item).
        baselines, figures, reference: as for the shared scorers.
    """

    max_draws: int = 100
    elbo_particles: int = 10
    popularity_edges: Tuple[int, ...] = POPULARITY_EDGES
    baselines: Mapping[str, Any] = field(default_factory=dict)
    figures: Any = None
    reference: Any = None

    def score(self, fit, dataset: RatingsDataset, reference, sites: Sequence[str], budget,
              draws_out: Optional[Dict] = None) -> Dict[str, Any]:
        start = time.perf_counter()
        ratings = held_out_ratings(dataset)
        num_draws = min(budget.num_eval_samples, self.max_draws) if fit.has_density else 1
        means, sigmas = predictive_means(fit, dataset, ratings, num_draws)
        predictions = predictions_from_draws(means, sigmas, ratings, dataset.rating_min, dataset.rating_max)
        row = prediction_scores(predictions, ratings, self.popularity_edges)
        row["predictive_draws"] = num_draws
        if not has_point_masses(fit):
            log_weights = importance_log_weights(fit, self.elbo_particles, chunk_size=5)
            row["elbo"] = float(log_weights.double().mean())
        if draws_out is not None:  # for the figures; sigma's draws for the shared marginals figure
            draws_out[fit.guide_name] = {"predictions": predictions, **({"sigma": sigmas} if "sigma" in sites else {})}
        row["score_time_s"] = time.perf_counter() - start
        row.update(timing(fit, dataset.num_rows))
        return row


def timing(fit, num_rows: int) -> Dict[str, float]:
    """The fit's cost: final loss, wall time, steps per second and time per epoch."""
    epochs = epochs_run(fit, num_rows)
    return {"final_loss": fit.final_loss, "wall_time_s": fit.wall_time, "steps_per_s": fit.steps_per_second,
            "time_per_epoch_s": fit.wall_time / epochs}


def item_mean_baseline(dataset: RatingsDataset, setup, settings) -> Baseline:
    """The ``item_mean`` row: each item's mean training rating, noise = the training residuals' RMS."""
    inputs, _, mask = (a.cpu().double() for a in dataset.train)
    users_axis = 1 if dataset.orientation == "item" else 0
    counts, sums = mask.sum(users_axis), inputs.sum(users_axis)
    item_means = torch.where(counts > 0, sums / counts.clamp(min=1), inputs[mask.bool()].mean())
    fitted = item_means.unsqueeze(users_axis).expand_as(inputs)
    sigma = (inputs - fitted)[mask.bool()].pow(2).mean().sqrt()
    ratings = held_out_ratings(dataset)
    means = fitted[ratings.rows, ratings.columns].unsqueeze(0)
    predictions = predictions_from_draws(means, sigma.reshape(1), ratings, dataset.rating_min, dataset.rating_max)
    return Baseline({**prediction_scores(predictions, ratings), "noise_scale_fitted": float(sigma)}, predictions)


# ----------------------------------------------------------------------------------------------- figures


def row_predictions(comparison) -> Dict[str, RatingPredictions]:
    """Each finished row's test predictions: guides' from the scorer's draws, baselines' from their fit."""
    found = {name: draws["predictions"] for name, draws in comparison.draws.items() if "predictions" in draws}
    found.update({name: baseline.fitted for name, baseline in comparison.baselines.items()
                  if isinstance(baseline.fitted, RatingPredictions)})
    return found


def calibration_figure(predictions: Mapping[str, RatingPredictions], ratings: HeldOutRatings, title: str):
    """Nominal against empirical coverage of central predictive intervals; the diagonal is perfect calibration."""
    figure = Figure(figsize=(5, 4.6))
    axis = figure.subplots()
    axis.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--", label="calibrated")
    for name, predicted in predictions.items():
        axis.plot(CALIBRATION_LEVELS, calibration(predicted, ratings), marker="o", ms=3, label=name)
    axis.set_xlabel("nominal coverage of the central interval")
    axis.set_ylabel("empirical coverage (warm test ratings)")
    axis.set_title(title)
    axis.legend(fontsize="small")
    figure.tight_layout()
    return figure


def popularity_figure(predictions: Mapping[str, RatingPredictions], ratings: HeldOutRatings, title: str,
                      edges: Sequence[int] = POPULARITY_EDGES):
    """Test RMSE per item-popularity bucket per row; the tick labels give each bucket's number of test ratings."""
    labels = popularity_labels(edges)
    bucket = popularity_bucket(ratings.popularity, edges)
    counts = [int((ratings.warm & (bucket == index)).sum()) for index in range(len(labels))]
    figure = Figure(figsize=(7, 4))
    axis = figure.subplots()
    positions = np.arange(len(labels))
    width = 0.8 / max(1, len(predictions))
    for offset, (name, predicted) in enumerate(predictions.items()):
        scores = prediction_scores(predicted, ratings, edges)
        values = [scores[f"rmse_items_{label}"] for label in labels]
        axis.bar(positions + (offset - (len(predictions) - 1) / 2) * width, values, width, label=name)
    axis.set_xticks(positions)
    axis.set_xticklabels([f"{label.replace('_plus', '+').replace('_', '–')}\n(n={count})"
                          for label, count in zip(labels, counts)], fontsize="small")
    axis.set_xlabel("training ratings of the item")
    axis.set_ylabel("test RMSE (warm ratings)")
    axis.set_title(title)
    axis.legend(fontsize="small", ncol=2)
    figure.tight_layout()
    return figure


def learning_curves_figure(fits, num_rows: int, num_ratings: int, title: str):
    """Per epoch, each row's training loss per rating above its lowest (a moving average), on a log scale.

    The rows minimise different objectives (MAP the negative log joint, whose prior term for point
    masses is far below zero; the others a negative ELBO), so their levels do not compare; how fast
    each approaches its own end does.
    """
    figure = Figure(figsize=(7, 4))
    axis = figure.subplots()
    for name, fit in fits.items():
        losses = np.asarray(fit.losses, dtype=float)
        per_epoch = max(1, int(round(len(losses) / max(epochs_run(fit, num_rows), 1e-9))))
        whole = len(losses) // per_epoch * per_epoch
        curve = losses[:whole].reshape(-1, per_epoch).mean(1) / num_ratings
        window = max(1, len(curve) // 30)  # minibatch noise would hide the approach to the end
        smooth = np.convolve(curve, np.ones(window) / window, mode="valid")
        excess = np.clip(smooth - smooth.min(), 1e-4, None)
        axis.plot(np.arange(len(smooth)) + window, excess, label=name, lw=1.2)
    axis.set_yscale("log")
    axis.set_xlabel("epoch")
    axis.set_ylabel("training loss per rating above its lowest")
    axis.set_title(title)
    axis.legend(fontsize="small")
    figure.tight_layout()
    return figure


def figures(comparison) -> Dict[str, Figure]:
    """Calibration, RMSE by item popularity and learning curves of every finished row."""
    dataset = comparison.dataset
    ratings = held_out_ratings(dataset)
    predictions = row_predictions(comparison)
    out = {}
    if predictions:
        out["calibration"] = calibration_figure(predictions, ratings, f"autorec on {dataset.name}: calibration")
        out["rmse_by_popularity"] = popularity_figure(predictions, ratings,
                                                      f"autorec on {dataset.name}: RMSE by item popularity")
    if comparison.fits:
        out["learning_curves"] = learning_curves_figure(comparison.fits, dataset.num_rows, dataset.num_train_ratings,
                                                        f"autorec on {dataset.name}: learning curves")
    return out


FAMILY = Family(
    name="autorec",
    description="Bayesian I-AutoRec (masked Gaussian likelihood, Normal weight priors); MovieLens 100K / 1M",
    load_data=load_data,
    setup=setup,
    guides=("auto_delta", "mean_field", "auto_normal", "last_layer"),
    scoring=AutoRecScoring(baselines={"item_mean": item_mean_baseline}, figures=figures),
    settings={"batch_size": 32, "epochs": 150, "lr": 0.01, "lr_decay": 0.1, "elbo": "meanfield", "log_every": 100},
    fast_settings={"epochs": 2},
    options=(
        Option("--dataset", f"rating data: {', '.join(DATASETS)}", "generated"),
        Option("--split", "movielens-100k: u1..u5, ua, ub; movielens-1m and generated: u1..u5 (seeded random "
               "splits); a number k means uk", "u1"),
        Option("--data-dir", "folder with the MovieLens files (else downloaded once to the cache)"),
        Option("--orientation", "rows of the matrix: item (I-AutoRec) or user (U-AutoRec)", "item",
               choices=ORIENTATIONS),
        Option("--hidden", "hidden units (the paper's k)", DEFAULT_HIDDEN, type=int, target="model"),
        Option("--prior-scale", "standard deviation s of the Normal prior on the weights W, V; the paper's "
               "lambda is 2 sigma^2 / s^2", "validated: 0.092 (MovieLens, other data), 0.17 (generated)",
               type=float, target="model"),
        Option("--noise-scale", "observation noise sigma in rating units, or 'learned' (HalfNormal(1) prior)",
               "validated: 0.92 (MovieLens, other data), 0.86 (generated)", target="model"),
        Option("--activation", "hidden activation g", "sigmoid", choices=tuple(ACTIVATIONS), target="model"),
        Option("--output-activation", "output activation f", "identity", choices=tuple(ACTIVATIONS),
               target="model"),
    ),
)
