"""The shared runner: one model × many guides → one table of posterior quality, and figures.

It knows nothing model-specific beyond the :class:`~pyro_vi_zoo.registry.ModelSpec`.
For every guide it reports what applies (see DESIGN.md, "Posterior quality"):
the ELBO from many particles, PSIS k̂ (Yao et al. 2018), distances to the
reference posterior (exact KL when the reference is a known Gaussian; marginal
Wasserstein, mean error in sds, sd ratio and correlation error against reference
draws), the family's own held-out scores, wall time and steps per second. Each
row carries its whole configuration, so ``table.groupby(...)`` answers any
comparison. With ``out`` set, results are written after every guide, atomically:
an interrupted run keeps the rows of the guides that finished.
"""

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import pandas as pd
import torch

from . import metrics, plots
from .diagnostics import guide_gaussian, importance_log_weights
from .errors import DivergenceError, ZooError
from .guides.auto import GUIDES
from .references import Reference, atomic_torch_save
from .registry import ModelSpec, get_spec
from .runs import make_run_dir, save_figure, write_json, write_table
from .svi import FitResult, FitSettings, fit_prepared, latent_sites, prepare, resolve_settings


@dataclass
class Comparison:
    """What :func:`compare` returns: the table, the fits, the reference, the figures and where they were written."""

    table: pd.DataFrame
    fits: Dict[str, FitResult]
    dataset: Any
    reference: Optional[Reference]
    draws: Dict[str, Dict[str, torch.Tensor]] = field(default_factory=dict)
    figures: Dict[str, Any] = field(default_factory=dict)
    run_dir: Optional[Path] = None
    interrupted: bool = False
    config_columns: Sequence[str] = ()

    @property
    def metrics(self) -> pd.DataFrame:
        """The table without its configuration columns: guide, status and what was measured."""
        return self.table[[c for c in self.table.columns if c not in self.config_columns or c == "guide"]]


def resolve_guides(spec: ModelSpec, guides) -> List[str]:
    """Guide names for ``spec``: ``None`` or ``"all"`` means the spec's list; unknown names raise a :class:`ZooError`."""
    if guides is None or guides == "all" or (not isinstance(guides, str) and "all" in guides):
        return list(spec.guides) + list(spec.baselines)
    names = [guides] if isinstance(guides, str) else list(guides)
    valid = list(GUIDES) + list(spec.baselines)
    for name in names:
        if name not in valid:
            raise ZooError(f"unknown guide {name!r} for {spec.name}; choose from: {', '.join(valid)} (or all).")
    return list(dict.fromkeys(names))


def compare(
    model,
    guides=None,
    data=None,
    *,
    data_options: Optional[Dict[str, Any]] = None,
    model_options: Optional[Dict[str, Any]] = None,
    settings: Optional[FitSettings] = None,
    out=None,
    num_eval_samples: int = 1000,
    num_elbo_particles: int = 1000,
    draw_figures: bool = True,
    fast: bool = False,
    **overrides,
) -> Comparison:
    """Fit each guide to one model and score the posteriors side by side.

    Args:
        model: a registry name or :class:`ModelSpec`.
        guides: guide names (``None`` or ``"all"``: every guide that suits the model).
        data, data_options, model_options, settings, overrides: as for :func:`~pyro_vi_zoo.svi.fit`.
        out: a folder; results go to ``out/<model>/<timestamp>/`` (CSV, JSON,
            settings, fitted parameters, PNG figures). ``None`` writes nothing.
        num_eval_samples: posterior draws for predictive scores and reference distances.
        num_elbo_particles: importance samples for the ELBO and PSIS k̂.
        fast: a cheaper reference (fewer NUTS draws) for smoke tests.

    Returns:
        A :class:`Comparison`; ``table`` has one row per guide.
    """
    spec = get_spec(model)
    settings = resolve_settings(spec, settings, overrides)
    names = resolve_guides(spec, guides)
    dataset, model_kwargs = prepare(spec, data, settings, data_options, model_options)
    run_dir = make_run_dir(out, spec.name) if out is not None else None
    config = _configuration(spec, dataset, settings, data_options, model_options, model_kwargs)
    if run_dir is not None:
        write_json(run_dir / "settings.json", config)
    reference = spec.reference(dataset, model_kwargs, progress=settings.progress, fast=fast) if spec.reference else None
    sites = _compared_sites(spec, dataset, model_kwargs, reference)
    result = Comparison(pd.DataFrame(), {}, dataset, reference, run_dir=run_dir,
                        config_columns=tuple(["model"] + list(_flat_config(config))))
    rows = []
    try:
        for name in names:
            rows.append(_run_one(spec, name, dataset, model_kwargs, settings, reference, sites, result,
                                 num_eval_samples, num_elbo_particles))
            rows[-1] = {"model": spec.name, **rows[-1], **_flat_config(config)}
            result.table = pd.DataFrame(rows)
            if run_dir is not None:
                write_table(run_dir, result.table)
                _save_parameters(run_dir, result.fits.get(name))
    except KeyboardInterrupt:
        result.interrupted = True
    if draw_figures and result.fits:
        result.figures = _figures(spec, result, sites)
        if run_dir is not None:
            for figure_name, figure in result.figures.items():
                save_figure(figure, run_dir / f"{figure_name}.png")
    return result


def _run_one(spec, name, dataset, model_kwargs, settings, reference, sites, result, num_eval_samples, num_elbo_particles):
    if name in spec.baselines:
        start = time.perf_counter()
        row = spec.baselines[name](dataset, model_kwargs, settings)
        return {"guide": name, "status": "ok", "wall_time_s": time.perf_counter() - start, **row}
    try:
        fitted = fit_prepared(spec, name, dataset, model_kwargs, settings)
    except DivergenceError as error:
        return {"guide": name, "status": "diverged", "error": str(error)}
    result.fits[name] = fitted
    row = {"guide": name, "status": "ok"}
    row.update(score_fit(fitted, spec, dataset, reference, sites, num_eval_samples, num_elbo_particles, result.draws))
    return row


def score_fit(
    fitted: FitResult,
    spec: ModelSpec,
    dataset,
    reference: Optional[Reference],
    sites: Sequence[str],
    num_eval_samples: int = 1000,
    num_elbo_particles: int = 1000,
    draws_out: Optional[Dict] = None,
) -> Dict[str, float]:
    """Every metric that applies to one fitted guide (see the module docstring)."""
    row = {}
    if fitted.guide_info.has_density:
        log_weights = importance_log_weights(fitted, num_elbo_particles)
        row["elbo"] = metrics.elbo_from_log_weights(log_weights)
        row["pareto_k"] = metrics.pareto_khat(log_weights)
    if sites:
        draws = fitted.sample_posterior(num_eval_samples, sites)
        if draws_out is not None:
            draws_out[fitted.guide_name] = draws
        if reference is not None:
            row.update(metrics.reference_distances(
                metrics.flatten_samples(draws, sites)[0], metrics.flatten_samples(reference.samples, sites)[0]
            ))
            if reference.is_exact:
                row.update(kl_to_exact(fitted, reference, row.get("elbo")))
    if spec.evaluate is not None:
        row.update(spec.evaluate(fitted, dataset, num_eval_samples))
    row.update(final_loss=fitted.final_loss, wall_time_s=fitted.wall_time, steps_per_s=fitted.steps_per_second)
    return row


def kl_to_exact(fitted: FitResult, reference: Reference, elbo: Optional[float]) -> Dict[str, Any]:
    """KL(q‖p) to an exact Gaussian posterior: closed form for Gaussian guides, else log p(x) − ELBO (Monte Carlo)."""
    gaussian = guide_gaussian(fitted, reference.sites)
    if gaussian is not None:
        return {"kl_to_exact": metrics.gaussian_kl(*gaussian, reference.loc, reference.cov), "kl_method": "closed_form"}
    if elbo is not None and reference.log_evidence is not None:
        return {"kl_to_exact": reference.log_evidence - elbo, "kl_method": "monte_carlo"}
    return {"kl_to_exact": math.nan, "kl_method": "undefined (point estimate)"}


def _compared_sites(spec, dataset, model_kwargs, reference) -> List[str]:
    if reference is not None:
        return list(reference.sites)
    model = spec.bind_model(dataset, model_kwargs)
    present = latent_sites(model, dataset.train)
    wanted = spec.latent_sites if spec.latent_sites is not None else present
    return [site for site in wanted if site in present]


def _figures(spec, result: Comparison, sites) -> Dict[str, Any]:
    figures = {"elbo_traces": plots.elbo_traces({name: fit.losses for name, fit in result.fits.items()},
                                                 title=f"{spec.name}: SVI loss (negative ELBO)")}
    if result.draws and sites:
        figures["marginals"] = plots.marginals(result.draws, sites, result.reference)
    if spec.figures is not None:
        figures.update(spec.figures(result.fits, result.dataset, result.reference))
    return figures


def _configuration(spec, dataset, settings, data_options, model_options, model_kwargs) -> Dict[str, Any]:
    return {
        "model": spec.name,
        "dataset": dataset.name,
        "num_train": dataset.num_train,
        "num_test": 0 if dataset.test is None else int(dataset.test[0].shape[0]),
        "settings": settings.to_dict(),
        "data_options": dict(data_options or {}),
        "model_options": dict(model_options or {}),
        "model_kwargs": {k: v for k, v in model_kwargs.items() if isinstance(v, (int, float, str, bool, type(None)))},
        "torch": torch.__version__,
    }


def _flat_config(config: Dict[str, Any]) -> Dict[str, Any]:
    flat = {k: v for k, v in config.items() if not isinstance(v, dict)}
    for group in ("settings", "data_options", "model_options", "model_kwargs"):
        # an option named like a column (``--dataset uci:yacht`` beside "dataset") keeps both
        flat.update({(f"{key}_option" if key in flat else key): value for key, value in config[group].items()})
    flat.pop("progress", None)
    flat["elbo_kind"] = flat.pop("elbo")  # the column "elbo" holds the estimate
    return flat


def _save_parameters(run_dir: Path, fitted: Optional[FitResult]) -> None:
    if fitted is not None:
        atomic_torch_save(fitted.parameters(), run_dir / "parameters" / f"{fitted.guide_name}.pt")
