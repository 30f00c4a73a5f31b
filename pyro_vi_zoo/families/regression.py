"""What every regression family shares: held-out scores and the predictive-band figure.

Both work through the fitted model's own likelihood (a vectorised trace at the
test inputs), so any model with a Normal-like observed site ``"y"`` is served.
Targets standardised by the loader (``info["target_scale"]``) are scored in
their original units.
"""

import math
from typing import Dict

from matplotlib.figure import Figure
import numpy as np
import torch

from .. import metrics
from ..svi import FitResult


def predictive_likelihood(result: FitResult, inputs, num_samples: int, site: str = "y"):
    """The likelihood distribution of ``site`` at ``inputs``, batched over ``num_samples`` posterior draws (S, N)."""
    trace = result.vectorized_trace(inputs, None, num_samples=num_samples)
    return trace.nodes[site]["fn"]


def evaluate_regression(result: FitResult, dataset, num_samples: int = 1000) -> Dict[str, float]:
    """Held-out ``test_lpd``, ``rmse``, ``coverage_90`` and ``width_90``, in the target's original units."""
    if dataset.test is None:
        return {}
    inputs, target = dataset.test
    likelihood = predictive_likelihood(result, inputs, num_samples)
    with torch.no_grad():
        log_lik = likelihood.log_prob(target)
        draws = likelihood.sample()
        mean = likelihood.mean.expand_as(draws).mean(0)
    scale = float(dataset.info.get("target_scale", 1.0))
    coverage, width = metrics.interval_coverage(draws, target, 0.9)
    return {
        "test_lpd": metrics.log_predictive_density(log_lik) - math.log(scale),
        "rmse": metrics.rmse(mean, target) * scale,
        "coverage_90": coverage,
        "width_90": width * scale,
    }


def predictive_band_figure(fits: Dict[str, FitResult], dataset, num_samples: int = 1000, max_points: int = 2000):
    """5/50/95% posterior predictive quantiles over raw x, one panel per guide, data underneath, original units.

    Needs one-dimensional raw inputs (``info["x_train"]``) and the feature map the
    model was fitted on; returns ``None`` otherwise.
    """
    x_train = dataset.info.get("x_train")
    feature_map = dataset.info.get("feature_map")
    if x_train is None or np.ndim(x_train) != 1 or not fits:
        return None
    shift, scale = dataset.info.get("target_mean", 0.0), dataset.info.get("target_scale", 1.0)
    y_train = dataset.train[1].detach().cpu().numpy() * scale + shift
    grid = np.linspace(x_train.min(), x_train.max(), 200)
    device = dataset.train[0].device
    grid_inputs = torch.as_tensor(feature_map(grid) if feature_map else grid[:, None], dtype=dataset.train[0].dtype, device=device)
    shown = np.random.default_rng(0).permutation(len(x_train))[:max_points]
    columns = min(4, len(fits))
    rows = math.ceil(len(fits) / columns)
    figure = Figure(figsize=(4 * columns, 3.2 * rows))
    axes = figure.subplots(rows, columns, sharex=True, sharey=True, squeeze=False)
    for axis, (name, result) in zip(axes.flat, fits.items()):
        with torch.no_grad():
            draws = predictive_likelihood(result, grid_inputs, num_samples).sample().cpu().numpy()
        low, median, high = np.quantile(draws * scale + shift, [0.05, 0.5, 0.95], axis=0)
        axis.plot(x_train[shown], y_train[shown], ".", color="0.7", markersize=1.5, label="training data", zorder=1)
        axis.fill_between(grid, low, high, color="C1", alpha=0.45, label="5–95% predictive", zorder=2)
        axis.plot(grid, median, color="C3", lw=1.2, label="median", zorder=3)
        axis.set_title(name)
    for axis in axes.flat[len(fits):]:
        axis.set_visible(False)
    axes.flat[0].legend(loc="upper right", fontsize="small")
    figure.suptitle(f"posterior predictive, {dataset.name} data")
    figure.tight_layout()
    return figure
