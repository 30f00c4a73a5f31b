"""The figures every comparison draws: ELBO traces and posterior marginals against the reference.

Model-specific figures (predictive bands, mixture ellipses) come from each
family's scoring (``figures``). Figures are built as ``matplotlib.figure.Figure``
objects, not through pyplot: no backend is switched (notebooks keep theirs), no
global figure list grows, and the runner saves them as PNG.
"""

import math
from typing import Dict

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
import numpy as np
import torch

from .scoring.metrics import flatten_samples


def elbo_traces(losses: Dict[str, np.ndarray], title: str = "SVI loss (negative ELBO)"):
    """The loss trace of each guide, smoothed by a moving average, on a symmetric-log axis."""
    figure = Figure(figsize=(7, 4))
    axis = figure.subplots()
    for name, trace in losses.items():
        trace = np.asarray(trace, dtype=float)
        window = max(1, len(trace) // 50)
        smooth = np.convolve(trace, np.ones(window) / window, mode="valid")
        axis.plot(np.arange(len(smooth)) + window, smooth, label=name, lw=1.2)
    axis.set_yscale("symlog", linthresh=10)
    axis.set_xlabel("step")
    axis.set_ylabel("loss (moving average)")
    axis.set_title(title)
    axis.legend(fontsize="small", ncol=2)
    figure.tight_layout()
    return figure


def marginals(draws: Dict[str, Dict[str, torch.Tensor]], sites, reference=None, max_panels: int = 16):
    """Histogram of each latent coordinate's draws per guide, with the reference on top.

    ``draws`` maps guide name to site samples; ``reference`` is a
    :class:`~pyro_vi_zoo.scoring.references.Reference` (an exact Gaussian is drawn as its
    density, reference draws as a filled histogram).
    """
    flat = {name: flatten_samples(samples, sites) for name, samples in draws.items()}
    labels = next(iter(flat.values()))[1] if flat else []
    ref_values = flatten_samples(reference.samples, sites)[0] if reference is not None else None
    count = min(len(labels), max_panels)
    columns = min(4, max(count, 1))
    rows = max(1, math.ceil(count / columns))
    figure = Figure(figsize=(3.6 * columns + 2.2, 2.8 * rows))
    axes = figure.subplots(rows, columns, squeeze=False)
    for j, axis in enumerate(axes.flat[:count]):
        _marginal_panel(axis, j, labels[j], flat, ref_values, reference)
    for axis in axes.flat[count:]:
        axis.set_visible(False)
    handles, names = axes.flat[0].get_legend_handles_labels()
    legend_width = 2.2 / (3.6 * columns + 2.2)
    figure.legend(handles, names, loc="center right", fontsize="small", frameon=False)
    figure.tight_layout(rect=(0, 0, 1 - legend_width, 1))
    return figure


def _marginal_panel(axis, j, label, flat, ref_values, reference):
    columns = [values[:, j] for values, _ in flat.values()]
    if ref_values is not None:
        columns.append(ref_values[:, j])
    low, high = _span(np.concatenate(columns))
    bins = np.linspace(low, high, 60)
    if ref_values is not None:
        if reference.is_exact:
            mean, sd = float(reference.loc[j]), float(reference.cov[j, j]) ** 0.5
            grid = np.linspace(low, high, 300)
            axis.fill_between(grid, np.exp(-0.5 * ((grid - mean) / sd) ** 2) / (sd * math.sqrt(2 * math.pi)),
                              color="0.8", label=f"reference ({reference.kind})")
        else:
            axis.hist(ref_values[:, j], bins=bins, density=True, color="0.8", label=f"reference ({reference.kind})")
    for name, (values, _) in flat.items():
        style = dict(label=name, color=_colour(name, flat), ls=_line_style(name, flat))
        if np.ptp(values[:, j]) == 0:
            axis.axvline(values[0, j], lw=1.2, **style)
        else:
            # step outlines with their own dash pattern: guides of one family (mean_field, auto_normal)
            # land on the same histogram, and each must stay visible on top of the other
            axis.hist(values[:, j], bins=bins, density=True, histtype="step", lw=1.3, **style)
    axis.set_title(label, fontsize="small")
    axis.set_yticks([])
    axis.xaxis.set_major_locator(MaxNLocator(nbins=3))
    axis.tick_params(axis="x", labelsize="x-small")


def _colour(name, flat):
    return f"C{list(flat).index(name) % 10}"


def _line_style(name, flat):
    return ("-", "--", ":", "-.")[list(flat).index(name) % 4]


def _span(values: np.ndarray):
    low, high = np.quantile(values, [0.001, 0.999])
    if high <= low:
        low, high = low - 1.0, high + 1.0
    pad = 0.1 * (high - low)
    return low - pad, high + pad
