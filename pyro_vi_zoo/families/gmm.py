"""The ``gmm`` family: a Gaussian mixture fitted with every guide, scored against the truth.

Model: :mod:`pyro_vi_zoo.models.gmm` (K components, diagonal covariances; the
assignments enumerated or marginalised). Guides: the hand-written mean-field guide
over the global parameters and Pyro's auto guides, started from k-means++ seeds
(:func:`~pyro_vi_zoo.guides.gmm.initial_values`), with several restarts by default:
mixtures have bad local optima (two components on one cluster), and the best of a
few starts by ELBO avoids them (Blei et al. 2017, sec. 2.4 and 5).

Scores, besides the runner's: held-out log predictive density of the mixture
(``test_lpd``); recovered weights, locations and scales against the true ones
after optimal matching of components (Hungarian algorithm, scipy's
``linear_sum_assignment``), as the largest absolute error of each; the adjusted
Rand index (Hubert & Arabie 1985) of MAP assignments against the true labels.
On posteriordb's ``low_dim_gauss_mix`` (Magnusson et al. 2023) the model takes the
Stan model's priors and ordered locations, and the reference draws are the
reference posterior for the runner's distances.
"""

import functools
import math
from typing import Dict

import numpy as np
import torch
from matplotlib.figure import Figure
from scipy.optimize import linear_sum_assignment
from scipy.special import comb

from ..data.mixture import load_mixture_data
from ..errors import ZooError
from ..family import Family, Option, Setup
from ..guides.gmm import gmm_mean_field, initial_values
from ..models.gmm import (
    ASSIGNMENT_MODES,
    GLOBAL_SITES,
    MAX_PLATE_NESTING,
    MixturePriors,
    assignment_log_probabilities,
    gmm,
    mixture_log_likelihood,
)
from ..scoring import GlobalLatentScoring
from ..scoring.metrics import log_predictive_density
from ..scoring.references import Reference

POSTERIORDB_PRIORS = MixturePriors(
    weight_concentration=5.0, loc_loc=0.0, loc_scale=2.0, scale_prior="halfnormal", scale_scale=2.0
)
ORDERED_CHOICES = ("yes", "no")


def load_data(data=None, *, test_fraction: float = 0.2):
    """The default 2-D mixture (``None``), an (n, d) array, a CSV file, or a posteriordb folder
    (a folder path or ``"posteriordb:<folder>"``)."""
    return load_mixture_data(data, test_fraction=test_fraction)


def setup(dataset, *, components=None, assignments=None, ordered=None) -> Setup:
    """The mixture with K components, the assignment mode, ordering, and priors.

    posteriordb data get the Stan model's priors and ordered locations (required
    to compare with its reference draws). Other data get weakly informative priors
    scaled to the data: locations ~ Normal(data mean, 2 data sd), scales ~
    LogNormal(log data sd, 1.5), weights ~ Dirichlet(1, ..., 1). Every fit is scored
    against the marginalised model (the same log joint: importance weights cannot
    enumerate). Auto guides start from k-means++ seeds, as the hand-written guide.
    """
    num_components = (dataset.num_components or 2) if components is None else components
    if not isinstance(num_components, int) or num_components < 1:
        raise ZooError(f"--components must be an integer >= 1, got {num_components!r}.")
    assignments = assignments or "marginalised"
    if assignments not in ASSIGNMENT_MODES:
        raise ZooError(f"--assignments must be one of {ASSIGNMENT_MODES}, got {assignments!r}.")
    if dataset.posteriordb:
        if ordered == "no":
            raise ZooError("posteriordb's low_dim_gauss_mix orders its locations; drop --ordered no.")
        priors, ordered = POSTERIORDB_PRIORS, True
    else:
        points = dataset.train[0].detach()
        spread = points.std(0).clamp(min=1e-6) if len(points) > 1 else torch.ones_like(points[0])
        priors = MixturePriors(loc_loc=points.mean(0), loc_scale=2.0 * spread, scale_loc=spread.log(), scale_scale=1.5)
        ordered = ordered == "yes"
    kwargs = dict(num_components=num_components, assignments=assignments, ordered=ordered, priors=priors)
    return Setup(
        model=functools.partial(gmm, **kwargs),
        guides={"mean_field": lambda: functools.partial(gmm_mean_field, **kwargs)},
        model_kwargs=kwargs,
        subsample_keyword="subsample",
        max_plate_nesting=MAX_PLATE_NESTING,
        auto_guide_options=lambda: {"init_loc_fn": kmeans_init(dataset.train[0], num_components, ordered)},
        score_model=functools.partial(gmm, **dict(kwargs, assignments="marginalised")),
        compared_sites=GLOBAL_SITES,
    )


def evaluate(result, dataset, num_samples: int = 1000) -> Dict[str, float]:
    """``test_lpd``; ``weight_error``, ``loc_error``, ``scale_error`` against true parameters; ``ari``."""
    draws = result.sample_posterior(num_samples, GLOBAL_SITES)
    weights, locs, scales = (draws[name].detach() for name in GLOBAL_SITES)
    row = {}
    if dataset.test is not None:
        with torch.no_grad():
            log_likelihood = mixture_log_likelihood(dataset.test[0], weights, locs, scales)
        row["test_lpd"] = log_predictive_density(log_likelihood)
    means = {name: draws[name].detach().double().mean(0).cpu() for name in GLOBAL_SITES}
    if dataset.true_parameters is not None:
        row.update(parameter_errors(means, dataset.true_parameters))
    labels = dataset.train_labels
    if labels is not None:
        row["ari"] = adjusted_rand_index(labels, map_assignments(dataset.train[0].cpu(), means))
    return row


def map_assignments(data, parameters) -> np.ndarray:
    """The most probable component of each point given point values of ``weights``, ``locs``, ``scales``."""
    with torch.no_grad():
        log_probabilities = assignment_log_probabilities(
            data.double(), *(torch.as_tensor(parameters[name], device=data.device).double() for name in GLOBAL_SITES)
        )
    return log_probabilities.argmax(-1).numpy()


def match_components(estimated_locs, true_locs):
    """Pairs ``(true_index, estimated_index)`` of components with the least total squared
    distance between locations (Hungarian algorithm; rectangular when K differs from the truth)."""
    cost = ((np.asarray(true_locs)[:, None, :] - np.asarray(estimated_locs)[None, :, :]) ** 2).sum(-1)
    return linear_sum_assignment(cost)


def parameter_errors(estimated, truth) -> Dict[str, float]:
    """Largest absolute error of weights, locations and scales after matching components to the truth.

    With fewer estimated than true components, only the matched true components count.
    """
    estimated = {name: np.asarray(estimated[name], dtype=float) for name in GLOBAL_SITES}
    true_index, estimated_index = match_components(estimated["locs"], truth["locs"])
    return {
        f"{name[:-1]}_error": float(np.abs(estimated[name][estimated_index] - np.asarray(truth[name])[true_index]).max())
        for name in GLOBAL_SITES
    }


def adjusted_rand_index(labels_true, labels_predicted) -> float:
    """Adjusted Rand index of two labellings (Hubert & Arabie 1985): 1 for identical partitions, ~0 by chance."""
    labels_true, labels_predicted = np.asarray(labels_true), np.asarray(labels_predicted)
    if labels_true.shape != labels_predicted.shape:
        raise ZooError(f"label arrays differ in shape: {labels_true.shape} vs {labels_predicted.shape}.")
    _, true_index = np.unique(labels_true, return_inverse=True)
    _, predicted_index = np.unique(labels_predicted, return_inverse=True)
    table = np.zeros((true_index.max() + 1, predicted_index.max() + 1))
    np.add.at(table, (true_index, predicted_index), 1)
    pairs = comb(table, 2).sum()
    rows, columns = comb(table.sum(1), 2).sum(), comb(table.sum(0), 2).sum()
    expected = rows * columns / comb(len(labels_true), 2)
    maximum = (rows + columns) / 2
    if maximum == expected:
        return 1.0
    return float((pairs - expected) / (maximum - expected))


def reference(dataset, setup, *, progress=True, fast=False):
    """posteriordb's reference draws as a :class:`Reference` over our sites; ``None`` for other data."""
    if dataset.reference_draws is None:
        return None
    return Reference("posteriordb", GLOBAL_SITES, posteriordb_samples(dataset.reference_draws))


def posteriordb_samples(draws) -> Dict[str, torch.Tensor]:
    """low_dim_gauss_mix draws (``mu[1]``, ``mu[2]``, ``sigma[1]``, ``sigma[2]``, ``theta``) in our site shapes:
    weights (R, 2) = (theta, 1 - theta), locs and scales (R, 2, 1)."""
    column = lambda name: torch.as_tensor(np.asarray(draws[name]), dtype=torch.get_default_dtype())
    theta = column("theta")
    return {
        "weights": torch.stack([theta, 1 - theta], -1),
        "locs": torch.stack([column("mu[1]"), column("mu[2]")], -1).unsqueeze(-1),
        "scales": torch.stack([column("sigma[1]"), column("sigma[2]")], -1).unsqueeze(-1),
    }


def figures(comparison):
    """``components``: the data with each guide's fitted components (see :func:`components_figure`)."""
    return {"components": components_figure(comparison.fits, comparison.dataset)} if comparison.fits else {}


def components_figure(fits, dataset, num_draws: int = 30, max_points: int = 2000):
    """One panel per guide: the data, each component's 2-sd ellipse at the posterior mean (thick)
    and at ``num_draws`` posterior draws (thin: the posterior spread). 1-D data: a histogram
    with the weighted component densities. More than 2 dimensions: the first two."""
    points = dataset.train[0].detach().cpu().numpy()[:max_points]
    columns = min(4, len(fits))
    rows = math.ceil(len(fits) / columns)
    figure = Figure(figsize=(3.8 * columns, 3.4 * rows))
    axes = np.atleast_1d(figure.subplots(rows, columns, squeeze=False)).ravel()
    for axis, (name, result) in zip(axes, fits.items()):
        draws = {site: value.detach().double().cpu().numpy() for site, value in
                 result.sample_posterior(num_draws, GLOBAL_SITES).items()}
        if points.shape[1] == 1:
            _draw_densities(axis, points[:, 0], draws)
        else:
            _draw_ellipses(axis, points, draws)
        axis.set_title(name, fontsize=10)
    for axis in axes[len(fits):]:
        axis.set_visible(False)
    figure.suptitle(f"gmm on {dataset.name}: fitted components (posterior mean and draws)", fontsize=10)
    figure.tight_layout()
    return figure


def _draw_ellipses(axis, points, draws):
    axis.plot(points[:, 0], points[:, 1], ".", color="0.65", markersize=2)
    angle = np.linspace(0, 2 * np.pi, 100)
    colors = ["tab:red", "tab:blue", "tab:green", "tab:orange", "tab:purple", "tab:brown"]
    for k in range(draws["locs"].shape[1]):
        color = colors[k % len(colors)]
        for locs, scales, width, alpha in _ellipse_sets(draws, k):
            axis.plot(locs[0] + 2 * scales[0] * np.cos(angle), locs[1] + 2 * scales[1] * np.sin(angle),
                      color=color, linewidth=width, alpha=alpha)
        mean_weight = draws["weights"][:, k].mean()
        axis.annotate(f"{mean_weight:.2f}", draws["locs"][:, k, :2].mean(0), color=color, fontsize=8)
    axis.set_aspect("equal", adjustable="datalim")


def _ellipse_sets(draws, k):
    for locs, scales in zip(draws["locs"][:, k, :2], draws["scales"][:, k, :2]):
        yield locs, scales, 0.5, 0.25
    yield draws["locs"][:, k, :2].mean(0), draws["scales"][:, k, :2].mean(0), 2.0, 1.0


def _draw_densities(axis, values, draws):
    axis.hist(values, bins=60, density=True, color="0.8")
    grid = np.linspace(values.min(), values.max(), 300)
    for sample in range(len(draws["weights"])):
        axis.plot(grid, _mixture_density(grid, draws, sample), color="tab:red", linewidth=0.5, alpha=0.25)
    mean = {site: value.mean(0, keepdims=True) for site, value in draws.items()}
    axis.plot(grid, _mixture_density(grid, mean, 0), color="tab:red", linewidth=2.0)


def _mixture_density(grid, draws, sample):
    weights, locs, scales = draws["weights"][sample], draws["locs"][sample, :, 0], draws["scales"][sample, :, 0]
    normal = np.exp(-0.5 * ((grid[:, None] - locs) / scales) ** 2) / (scales * math.sqrt(2 * math.pi))
    return normal @ weights


def kmeans_init(data, num_components: int, ordered: bool):
    """An ``init_loc_fn`` for auto guides: k-means++ seeds and data-scaled values (as the hand-written guide),
    drawn afresh for every guide built, so restarts start differently."""
    cache = {}

    def init_loc_fn(site):
        if not cache:
            cache.update(initial_values(data, num_components, ordered))
        return cache[site["name"]].clone()

    return init_loc_fn


FAMILY = Family(
    name="gmm",
    description="Gaussian mixture (Dirichlet weights, Normal locations, LogNormal scales); "
    "assignments enumerated or marginalised",
    load_data=load_data,
    setup=setup,
    guides=("mean_field", "auto_normal", "auto_diag_normal", "auto_mvn", "auto_delta", "auto_laplace"),
    scoring=GlobalLatentScoring(evaluate=evaluate, reference=reference, figures=figures),
    settings={"steps": 1500, "lr": 0.05, "lr_decay": 0.1, "restarts": 4},
    fast_settings={"steps": 40, "restarts": 2},
    options=(
        Option("--components", "number of mixture components K", "2, or the data set's K", type=int,
               target="model"),
        Option("--assignments", "discrete assignments: marginalised (MixtureSameFamily, Trace_ELBO) or "
               "enumerated (TraceEnum_ELBO)", "marginalised", choices=ASSIGNMENT_MODES, target="model"),
        Option("--ordered", "order component locations along the first dimension (always on for posteriordb)",
               "no", choices=ORDERED_CHOICES, target="model"),
    ),
)
