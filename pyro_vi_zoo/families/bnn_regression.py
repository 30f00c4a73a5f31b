"""The ``bnn_regression`` family: a Bayesian MLP (Blundell et al. 2015) with every guide that suits it.

Default data: the cubic toy set on the raw input x (standardised, no feature
map), so the network has to find the curve itself. Real data: the UCI
regression benchmark in its standard splits (Hernández-Lobato & Adams 2015),
``--dataset uci:<name> --split <k> [--data-dir DIR]``. Targets are standardised
with training statistics; scores come back in original units.

Besides the Bayesian guides, the table has an ``mle`` row: the same network
with no prior, trained by maximum likelihood with a learned noise scale and the
same optimiser settings, to show what the Bayesian treatment buys over a point estimate.
"""

import functools
import math
import os
from typing import Optional, Tuple

import numpy as np
import torch
from matplotlib.figure import Figure
from pyro.infer.autoguide.initialization import init_to_median

from ..data.regression import cubic_dataset, regression_dataset
from ..data.uci import load_uci
from ..errors import DataError, ZooError
from ..family import Family, Option, Setup, parse_widths
from ..guides.bnn_regression import bnn_regression_guide
from ..models.bnn_regression import BayesianMLP, fit_maximum_likelihood, layer_sizes
from ..scoring import Baseline, GlobalLatentScoring
from .regression import evaluate_regression, input_grid, likelihood_on_grid, to_original_units

DEFAULT_HIDDEN = "50"
Z_90 = 1.6448536269514722  # standard Normal 95% quantile: the central 90% interval is mean ± Z_90 sd


def load_data(data=None, *, dataset: Optional[str] = None, split: int = 0, data_dir: Optional[str] = None):
    """The cubic toy data on raw x (default), ``dataset="uci:<name>"``, a UCI-format folder, or arrays ``(x, y)``."""
    if dataset not in (None, "cubic"):
        if not str(dataset).startswith("uci:") or len(dataset) <= 4:
            raise DataError(f"unknown --dataset {dataset!r}; use cubic (the default) or uci:<name>, e.g. uci:yacht.")
        return load_uci(dataset[4:], split=split, data_dir=data_dir)
    if data is None:
        return cubic_dataset(features="linear")
    if isinstance(data, (str, os.PathLike)):
        folder = os.fspath(data)
        if os.path.isfile(os.path.join(folder, "data.txt")):
            return load_uci(os.path.basename(os.path.normpath(folder)), split=split, data_dir=folder)
        raise DataError(f"--data {folder!r} is not a folder in the UCI split format (no data.txt); "
                        "for UCI data use --dataset uci:<name> --data-dir DIR.")
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return regression_dataset(data[0], data[1], features="linear")
    raise DataError("data must be None (the embedded cubic data), a UCI-format folder, or a pair (x, y) of arrays.")


def setup(dataset, *, hidden=None, prior_scale: float = None) -> Setup:
    """One :class:`BayesianMLP` on the data's device. Inputs and targets are standardised, so unit-scale
    priors suit any data set: weights and biases ~ Normal(0, 1), sigma ~ HalfNormal(1); one hidden
    layer of 50 ReLU units by default."""
    prior_scale = 1.0 if prior_scale is None else float(prior_scale)
    if not prior_scale > 0:
        raise ZooError(f"--prior-scale must be positive, got {prior_scale}.")
    widths = parse_widths(hidden or DEFAULT_HIDDEN, example="50 or 50,50")
    x = dataset.train[0]
    with torch.device(x.device):
        network = BayesianMLP(x.shape[-1], widths, prior_scale, noise_prior_scale=1.0)
    return Setup(
        model=network,
        guides={"mean_field": lambda: functools.partial(bnn_regression_guide, hidden=widths)},
        model_kwargs={"hidden": ",".join(map(str, widths)), "prior_scale": prior_scale, "noise_prior_scale": 1.0},
        auto_guide_options=lambda: {"init_loc_fn": linear_layer_init(x.shape[-1], widths)},
        compared_sites=("sigma",),
        subsample_keyword="subsample",
    )


def linear_layer_init(input_dim: int, hidden: Tuple[int, ...]):
    """An ``init_loc_fn`` for auto guides that starts where the hand-written guide does: weights and
    biases Kaiming/He uniform (as :class:`torch.nn.Linear`), other sites at their prior median. At the
    prior means (all weights zero) every ReLU unit is dead and identical, a saddle SVI does not leave."""
    fan_in = {index: size[0] for index, size in enumerate(layer_sizes(input_dim, hidden))}

    def init_loc_fn(site):
        parts = site["name"].split(".")
        if len(parts) == 3 and parts[0] == "layers" and parts[2] in ("weight", "bias"):
            bound = 1.0 / math.sqrt(fan_in[int(parts[1])])
            prototype = site["fn"].mean
            return prototype.new_empty(site["fn"].shape()).uniform_(-bound, bound)
        return init_to_median(site, num_samples=15)

    return init_loc_fn


def mle_baseline(dataset, setup, settings) -> Baseline:
    """The ``mle`` row: the same network without priors, maximum likelihood with a learned noise scale.

    Trained with the fit's optimiser settings (steps, lr, lr decay, batch size, seed);
    scored like the guides: held-out log density, RMSE and the exact central 90%
    interval ``mean ± 1.645 sigma``, in original units. The trained network comes
    back with the row, for the figure.
    """
    x, y = dataset.train
    net = fit_maximum_likelihood(x, y, setup.model.hidden, num_steps=settings.steps, lr=settings.lr,
                                 lr_decay=settings.lr_decay, batch_size=settings.batch_size, seed=settings.seed)
    final_loss = -float(net.log_likelihood(x, y).detach().sum())
    if dataset.test is None:
        return Baseline({"final_loss": final_loss}, net)
    x_test, y_test = dataset.test
    scale = dataset.target_scale
    with torch.no_grad():
        mean, sigma = net(x_test), net.sigma
        inside = (y_test - mean).abs() <= Z_90 * sigma
        row = {
            "test_lpd": float(net.log_likelihood(x_test, y_test).double().mean()) - math.log(scale),
            "rmse": float((mean - y_test).double().pow(2).mean().sqrt()) * scale,
            "coverage_90": float(inside.double().mean()),
            "width_90": float(2 * Z_90 * sigma) * scale,
            "final_loss": final_loss,
        }
    return Baseline(row, net)


def figures(comparison):
    """Two panels on one-dimensional data: the MLE network and the variational posterior (mean_field if fitted)."""
    fits, dataset = comparison.fits, comparison.dataset
    if not fits or input_grid(dataset) is None:
        return {}
    name, posterior = ("mean_field", fits["mean_field"]) if "mean_field" in fits else next(iter(fits.items()))
    mle = comparison.baselines["mle"].fitted if "mle" in comparison.baselines else None
    if mle is None:
        settings = posterior.settings
        mle = fit_maximum_likelihood(*dataset.train, hidden=comparison.setup.model.hidden, num_steps=settings.steps,
                                     lr=settings.lr, lr_decay=settings.lr_decay, batch_size=settings.batch_size,
                                     seed=settings.seed)
    return {"mle_vs_posterior": mle_vs_posterior_figure(mle, posterior, name, dataset)}


def mle_vs_posterior_figure(mle, posterior, guide_name: str, dataset, num_samples: int = 1000, max_points: int = 2000):
    """Data and the 5/50/95% predictive band over raw x, from ``num_samples`` draws: MLE (left), posterior (right)."""
    x_train = dataset.x_train
    grid, inputs = input_grid(dataset)
    generator = torch.Generator(device=inputs.device).manual_seed(0)
    with torch.no_grad():
        mean, sigma = mle(inputs), mle.sigma
        mle_draws = mean + sigma * torch.randn((num_samples,) + mean.shape, generator=generator, device=inputs.device)
        posterior_draws = likelihood_on_grid(posterior, inputs, num_samples).sample()
    figure = Figure(figsize=(10, 4))
    axes = figure.subplots(1, 2, sharex=True, sharey=True)
    shown = np.random.default_rng(0).permutation(len(x_train))[:max_points]
    y_train = to_original_units(dataset.train[1].detach().cpu().numpy(), dataset)
    panels = (("maximum likelihood (mle)", mle_draws), (f"variational posterior ({guide_name})", posterior_draws))
    for axis, (title, draws) in zip(axes, panels):
        low, median, high = np.quantile(to_original_units(draws.cpu().numpy(), dataset), [0.05, 0.5, 0.95], axis=0)
        axis.plot(x_train[shown], y_train[shown], ".", color="0.6", markersize=2, label="training data")
        axis.fill_between(grid, low, high, alpha=0.35, label="5–95% predictive")
        axis.plot(grid, median, lw=1.5, label="median")
        axis.set_title(title)
        axis.set_xlabel("x")
    axes[0].set_ylabel("y")
    axes[0].legend(loc="upper right", fontsize="small")
    figure.suptitle(f"bnn_regression on {dataset.name}: {num_samples} predictive draws")
    figure.tight_layout()
    return figure


FAMILY = Family(
    name="bnn_regression",
    description="Bayesian neural network regression (MLP, Normal priors, learned noise); UCI benchmark splits",
    load_data=load_data,
    setup=setup,
    guides=("mean_field", "auto_normal", "auto_diag_normal", "auto_lowrank_mvn", "auto_delta"),
    scoring=GlobalLatentScoring(evaluate=evaluate_regression, baselines={"mle": mle_baseline}, figures=figures),
    settings={"steps": 5000, "lr": 0.01, "lr_decay": 0.1, "num_particles": 1},
    fast_settings={"steps": 50},
    options=(
        Option("--dataset", "data set: cubic (embedded) or uci:<name> (e.g. uci:yacht, uci:bostonHousing)", "cubic"),
        Option("--split", "which standard train/test split of a UCI data set", 0, type=int),
        Option("--data-dir", "local folder with UCI data sets in the split format (else download to the cache)"),
        Option("--hidden", "hidden layer widths, comma-separated", DEFAULT_HIDDEN, target="model"),
        Option("--prior-scale", "standard deviation of the Normal prior on every weight and bias", 1.0,
               type=float, target="model"),
    ),
)
