"""What the regression families share: held-out scores and the predictive figures, in original units.

Both work through the fitted model's own likelihood (a vectorised trace at the
test inputs), so any model with a Normal observed site ``"y"`` is served.
"""

import math
from typing import Dict, Optional

import numpy as np
import torch
from matplotlib.figure import Figure

from ..scoring.predictive import heldout_scores

GRID_POINTS = 200


def evaluate_regression(result, dataset, num_samples: int = 1000) -> Dict[str, float]:
    """Held-out ``test_lpd``, ``rmse``, ``coverage_90`` and ``width_90``, in the target's original units."""
    if dataset.test is None:
        return {}
    return heldout_scores(result, dataset.test, num_samples, scale=dataset.target_scale)


def input_grid(dataset):
    """An even grid over the raw one-dimensional training inputs and its features as the model sees them;
    ``None`` when the inputs are not one-dimensional."""
    x_train = getattr(dataset, "x_train", None)
    if x_train is None or np.ndim(x_train) != 1:
        return None
    grid = np.linspace(x_train.min(), x_train.max(), GRID_POINTS)
    like = dataset.train[0]
    features = dataset.feature_map(grid) if dataset.feature_map is not None else grid[:, None]
    return grid, torch.as_tensor(features, dtype=like.dtype, device=like.device)


def likelihood_on_grid(result, inputs, num_samples: int):
    """The likelihood of ``"y"`` at ``inputs`` batched over ``num_samples`` posterior draws: (S, grid)."""
    return result.vectorized_trace(inputs, None, num_samples=num_samples).nodes["y"]["fn"]


def to_original_units(values, dataset) -> np.ndarray:
    return np.asarray(values) * dataset.target_scale + dataset.target_mean


def predictive_band_figure(result, dataset, name: str, num_samples: int = 1000, max_points: int = 2000):
    """The seed's picture: the data and one posterior's 5/50/95% predictive band over x (noise included)."""
    grid, inputs = input_grid(dataset)
    with torch.no_grad():
        draws = likelihood_on_grid(result, inputs, num_samples).sample().cpu().numpy()
    low, median, high = np.quantile(to_original_units(draws, dataset), [0.05, 0.5, 0.95], axis=0)
    figure = Figure(figsize=(6.5, 4))
    axis = figure.subplots()
    shown = np.random.default_rng(0).permutation(len(dataset.x_train))[:max_points]
    y_train = to_original_units(dataset.train[1].detach().cpu().numpy(), dataset)
    axis.plot(dataset.x_train[shown], y_train[shown], ".", color="0.7", markersize=1.5, label="training data")
    axis.fill_between(grid, low, high, color="C1", alpha=0.45, label="5–95% predictive")
    axis.plot(grid, median, color="C3", lw=1.2, label="median")
    if getattr(dataset, "true_function", None) is not None:
        axis.plot(grid, dataset.true_function(grid), "k--", lw=1, label="true mean")
    axis.set_xlabel("x")
    axis.set_ylabel("y")
    axis.legend(loc="upper right", fontsize="small")
    axis.set_title(f"posterior predictive ({name}), {dataset.name} data")
    figure.tight_layout()
    return figure


def mean_band_figure(fits, dataset, reference_means: Optional[np.ndarray] = None, reference_label: str = "reference",
                     num_samples: int = 1000):
    """What differs between guides: the 5–95% band of the regression mean E[y | x, θ] (no noise) per guide,
    drawn as its difference from the reference posterior's mean curve (zoomed where guides differ),
    over the reference's own band in grey. ``reference_means`` (S, grid) are the reference's mean
    curves in model units; without them the guides are compared with their common average."""
    grid, inputs = input_grid(dataset)
    bands = {}
    with torch.no_grad():
        for name, result in fits.items():
            means = likelihood_on_grid(result, inputs, num_samples).mean
            bands[name] = to_original_units(means.expand(num_samples, -1).cpu().numpy(), dataset)
    reference = None if reference_means is None else to_original_units(reference_means, dataset)
    centre = reference.mean(0) if reference is not None else np.mean([b.mean(0) for b in bands.values()], 0)
    columns = min(4, len(bands))
    rows = math.ceil(len(bands) / columns)
    figure = Figure(figsize=(3.6 * columns, 2.9 * rows))
    axes = figure.subplots(rows, columns, sharex=True, sharey=True, squeeze=False)
    for index, (axis, (name, band)) in enumerate(zip(axes.flat, bands.items())):
        if reference is not None:
            low, high = np.quantile(reference - centre, [0.05, 0.95], axis=0)
            axis.fill_between(grid, low, high, color="0.75", label=f"{reference_label} 5–95%")
        low, mid, high = np.quantile(band - centre, [0.05, 0.5, 0.95], axis=0)
        colour = f"C{index % 10}"
        axis.plot(grid, low, color=colour, lw=1)
        axis.plot(grid, high, color=colour, lw=1, label=f"{name} 5–95%")
        axis.plot(grid, mid, color=colour, lw=0.8, ls="--")
        axis.axhline(0, color="k", lw=0.5)
        axis.set_title(name, fontsize="small")
        axis.legend(loc="upper center", fontsize="x-small", frameon=False)
    for axis in axes.flat[len(bands):]:
        axis.set_visible(False)
    for axis in axes[:, 0]:
        axis.set_ylabel("mean − reference mean")
    for axis in axes[-1, :]:
        axis.set_xlabel("x")
    figure.suptitle(f"posterior of the regression mean, relative to the {reference_label} posterior's mean "
                    f"(original units, {dataset.name} data)", fontsize="small")
    figure.tight_layout()
    return figure


def regression_figures(comparison) -> Dict[str, Figure]:
    """``predictive_band`` (one posterior, noise included) and ``mean_band`` (every guide against the reference)."""
    dataset, fits = comparison.dataset, comparison.fits
    if not fits or input_grid(dataset) is None:
        return {}
    reference = comparison.reference
    reference_means = None
    if reference is not None and {"weight", "bias"} <= set(reference.samples):
        _, inputs = input_grid(dataset)
        weight = reference.samples["weight"].double()
        bias = reference.samples["bias"].double()
        reference_means = (weight @ inputs.double().cpu().T + bias.unsqueeze(-1)).numpy()
    shown = "auto_laplace" if "auto_laplace" in fits else next(iter(fits))
    return {"predictive_band": predictive_band_figure(fits[shown], dataset, shown),
            "mean_band": mean_band_figure(fits, dataset, reference_means,
                                          reference.kind if reference is not None else "average")}
