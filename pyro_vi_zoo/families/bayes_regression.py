"""The ``bayes_regression`` family: Bayesian linear regression on a feature map, with every guide.

Known noise gives an exact Gaussian posterior (and so exact KL for every guide);
learned noise is scored against NUTS draws.
"""

import functools
import os
from pathlib import Path

import torch


from ..data.regression import FEATURE_MAPS, cubic_dataset, read_csv_table, regression_dataset
from ..errors import DataError, ZooError
from ..family import Family, Option, Setup
from ..guides.bayes_regression import bayes_regression_guide
from ..models.bayes_regression import bayes_regression
from ..scoring import GlobalLatentScoring
from ..scoring.references import exact_linear_regression, nuts_reference
from .regression import evaluate_regression, regression_figures

NOISE_CHOICES = ("known", "learned")


def load_data(data=None, *, features: str = "poly3", target: str = None):
    """The cubic toy data (``data=None``), a CSV path (with ``target``), or arrays ``(x, y)``."""
    if data is None:
        return cubic_dataset(features)
    if isinstance(data, (str, os.PathLike)):
        x, y, names = read_csv_table(os.fspath(data), target)
        return regression_dataset(x, y, features=features, name=Path(data).stem, feature_names=names)
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return regression_dataset(data[0], data[1], features=features)
    raise DataError("data must be None (the embedded cubic data), a CSV path, or a pair (x, y) of arrays.")


def setup(dataset, *, noise: str = None, prior_scale: float = None) -> Setup:
    """The model with priors scaled to the data and the noise known or learned.

    Targets are standardised by the loader, so the defaults are unit-scale: weights
    and bias ~ Normal(0, 10) (weakly informative), sigma ~ HalfNormal(1). ``noise="known"``
    uses the data set's true noise scale when it has one (the cubic data), else
    the least-squares residual standard deviation (a plug-in estimate). The
    default is ``known`` exactly when the data set knows its noise.
    """
    features, y = dataset.train
    known = getattr(dataset, "noise_scale", None)
    noise = noise or ("known" if known is not None else "learned")
    if noise not in NOISE_CHOICES:
        raise ZooError(f"unknown noise {noise!r}; choose one of: {', '.join(NOISE_CHOICES)}.")
    kwargs = {"prior_scale": float(prior_scale or 10.0), "noise_prior_scale": 1.0}
    if noise == "known":
        kwargs["noise_scale"] = float(known or _residual_scale(features, y))
    return Setup(
        model=functools.partial(bayes_regression, **kwargs),
        guides={"mean_field": lambda: functools.partial(bayes_regression_guide, **kwargs)},
        model_kwargs=kwargs,
        subsample_keyword="subsample",
        compared_sites=("weight", "bias", "sigma"),
    )


def _residual_scale(features, y) -> float:
    design = torch.cat([features, torch.ones_like(features[:, :1])], dim=1).double()
    coefficients = torch.linalg.lstsq(design, y.double().unsqueeze(-1)).solution
    residuals = y.double() - (design @ coefficients).squeeze(-1)
    dof = max(len(y) - design.shape[1], 1)
    return float(residuals.pow(2).sum().div(dof).sqrt().clamp_min(1e-6))


def reference(dataset, setup, *, progress=True, fast=False):
    """Exact posterior for known noise; NUTS draws (cached) for learned noise (fewer in ``fast`` mode)."""
    features, y = dataset.train
    kwargs = setup.model_kwargs
    if kwargs.get("noise_scale") is not None:
        return exact_linear_regression(features, y, kwargs["prior_scale"], kwargs["noise_scale"])
    key = {"model": "bayes_regression", **kwargs}
    draws = {"num_samples": 200, "warmup_steps": 100} if fast else {}
    return nuts_reference(setup.model, (features, y), ("weight", "bias", "sigma"), key, progress=progress, **draws)


FAMILY = Family(
    name="bayes_regression",
    description="Bayesian linear regression on a polynomial feature map; exact posterior for known noise",
    load_data=load_data,
    setup=setup,
    guides=("mean_field", "auto_normal", "auto_diag_normal", "auto_mvn", "auto_lowrank_mvn",
            "auto_iaf", "auto_delta", "auto_laplace"),
    scoring=GlobalLatentScoring(evaluate=evaluate_regression, reference=reference, figures=regression_figures),
    settings={"steps": 2000, "lr": 0.1, "lr_decay": 0.0005, "num_particles": 8},
    fast_settings={"steps": 60},
    options=(
        Option("--features", "feature map of the inputs (polynomial degree; standardised)", "poly3",
               choices=FEATURE_MAPS),
        Option("--target", "the target column of the --data CSV file"),
        Option("--noise", "observation noise: known (exact posterior; the default where the data set "
               "knows it) or learned (NUTS reference)", "known for the embedded data, else learned",
               choices=NOISE_CHOICES, target="model"),
    ),
)
