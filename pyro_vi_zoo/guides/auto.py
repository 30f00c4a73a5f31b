"""Pyro's auto guides by name, with defaults that suit the zoo's models.

Each entry is a factory ``build(model) -> guide`` (a ``functools.partial`` of the
AutoGuide class, as TyXe passes guides), plus what the runner needs to know:
whether the guide has a density (MAP does not, so ELBO and PSIS do not apply)
and an optional ``finalize(guide, *args, **kwargs)`` run after SVI
(``auto_laplace`` turns its MAP fit into a Gaussian there).
"""

import functools
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from pyro.infer import autoguide
from pyro.infer.autoguide.initialization import init_to_mean, init_to_median

from ..errors import FitFailure, ZooError
from .flows import AutoAffineIAF


@dataclass(frozen=True)
class GuideInfo:
    """A named guide family: how to build it and how the runner should treat it."""

    name: str
    description: str
    build: Callable
    has_density: bool = True
    finalize: Optional[Callable] = None


def _laplace(guide, *args, **kwargs):
    try:
        return guide.laplace_approximation(*args, **kwargs)
    except RuntimeError as error:  # torch.linalg.LinAlgError among them
        if "positive-definite" not in str(error):
            raise
        raise FitFailure("the Laplace approximation needs a positive-definite Hessian of -log p at the fitted "
                         "point, and this one is not: the MAP fit has not reached a mode (give it more --steps "
                         "or a smaller --lr), or the posterior has no mode there.") from None


_PRIOR_MEDIAN = init_to_median(num_samples=15)
_PRIOR_MEAN = init_to_mean(fallback=_PRIOR_MEDIAN)


def _init_to_prior_mean(site=None):
    """Start at prior means (as the hand-written guides do), medians of prior draws where no finite mean
    exists (Pyro falls back on a NaN mean only: a HalfCauchy's is infinite).

    Copied, because a mean broadcast over a plate is an expanded view that Adam cannot update in place.
    """
    if site is None:
        return _init_to_prior_mean
    value = _PRIOR_MEAN(site)
    if not bool(torch.isfinite(value).all()):
        value = _PRIOR_MEDIAN(site)
    return value.clone()


_INIT = _init_to_prior_mean

AUTO_GUIDES = {
    info.name: info
    for info in (
        GuideInfo(
            "auto_normal",
            "AutoNormal: a Normal per latent site, independent (mean-field)",
            functools.partial(autoguide.AutoNormal, init_loc_fn=_INIT, init_scale=0.01),
        ),
        GuideInfo(
            "auto_diag_normal",
            "AutoDiagonalNormal: one diagonal Normal over all latents, flattened",
            functools.partial(autoguide.AutoDiagonalNormal, init_loc_fn=_INIT, init_scale=0.01),
        ),
        GuideInfo(
            "auto_mvn",
            "AutoMultivariateNormal: a full-covariance Normal over all latents",
            functools.partial(autoguide.AutoMultivariateNormal, init_loc_fn=_INIT, init_scale=0.01),
        ),
        GuideInfo(
            "auto_lowrank_mvn",
            "AutoLowRankMultivariateNormal: diagonal plus low-rank covariance",
            functools.partial(autoguide.AutoLowRankMultivariateNormal, init_loc_fn=_INIT, init_scale=0.01),
        ),
        GuideInfo(
            "auto_iaf",
            "two inverse autoregressive flows, then a diagonal affine map started like AutoNormal",
            functools.partial(AutoAffineIAF, init_loc_fn=_INIT, num_transforms=2, init_scale=0.01),
        ),
        GuideInfo(
            "auto_delta",
            "AutoDelta: a point estimate (MAP), no posterior spread",
            functools.partial(autoguide.AutoDelta, init_loc_fn=_INIT),
            has_density=False,
        ),
        GuideInfo(
            "auto_laplace",
            "AutoLaplaceApproximation: MAP, then a Gaussian from the Hessian",
            functools.partial(autoguide.AutoLaplaceApproximation, init_loc_fn=_INIT),
            finalize=_laplace,
        ),
    )
}

MEAN_FIELD = GuideInfo("mean_field", "the model's hand-written mean-field guide", build=None)

GUIDES = {"mean_field": MEAN_FIELD, **AUTO_GUIDES}


def get_guide_info(name: str) -> GuideInfo:
    """The :class:`GuideInfo` for ``name``; an unknown name raises a :class:`ZooError` listing the valid ones."""
    try:
        return GUIDES[name]
    except KeyError:
        raise ZooError(f"unknown guide {name!r}; choose one of: {', '.join(GUIDES)}.") from None
