"""Reference posteriors to score guides against: exact where conjugacy allows, NUTS otherwise.

A :class:`Reference` holds draws of the latent sites and, when the posterior is
Gaussian in closed form, its mean and covariance over the flattened sites and the
log evidence (so that KL(q‖p) = log p(x) − ELBO for any q). NUTS references are
cached on disk, keyed by the data, the model keywords and the sampler settings.
"""

import hashlib
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence, Tuple

import torch
from pyro.infer import MCMC, NUTS

from ..cache import cache_dir
from ..engine.fit import seeded
from ..runs import atomic_torch_save

logger = logging.getLogger(__name__)


@dataclass
class Reference:
    """Reference draws (and, if exact, the Gaussian) of a posterior.

    ``samples`` maps site name to draws of shape (S, *site_shape); ``loc`` and
    ``cov`` describe the exact Gaussian over the sites flattened in ``sites``
    order; ``log_evidence`` is log p(data) when known.
    """

    kind: str
    sites: Tuple[str, ...]
    samples: Dict[str, torch.Tensor]
    loc: Optional[torch.Tensor] = None
    cov: Optional[torch.Tensor] = None
    log_evidence: Optional[float] = None

    @property
    def is_exact(self) -> bool:
        return self.loc is not None


def linear_regression_posterior(features, y, prior_scale: float, noise_scale: float):
    """Exact posterior of (weight, bias) for Normal priors and known Gaussian noise (Bishop 2006, eq. 3.53–3.54).

    Returns ``(loc, cov, log_evidence)`` in float64, the bias last.
    """
    design = torch.cat([features.double(), torch.ones_like(features[:, :1]).double()], dim=1)
    y = y.double()
    num_points, dim = design.shape
    noise_var, prior_var = noise_scale**2, prior_scale**2
    precision = design.T @ design / noise_var + torch.eye(dim, dtype=design.dtype, device=design.device) / prior_var
    chol = torch.linalg.cholesky(precision)
    projected = design.T @ y / noise_var
    loc = torch.cholesky_solve(projected.unsqueeze(-1), chol).squeeze(-1)
    cov = torch.cholesky_inverse(chol)
    # log N(y; 0, σ²I + τ² X Xᵀ) by the matrix determinant lemma and Woodbury's identity
    log_det_precision = 2.0 * chol.diagonal().log().sum()
    log_det = num_points * math.log(noise_var) + dim * math.log(prior_var) + log_det_precision
    quadratic = y @ y / noise_var - projected @ loc
    log_evidence = -0.5 * (num_points * math.log(2 * math.pi) + log_det + quadratic)
    return loc, cov, float(log_evidence)


def exact_linear_regression(features, y, prior_scale, noise_scale, num_samples: int = 4000, seed: int = 0) -> Reference:
    """The exact :class:`Reference` of :func:`~pyro_vi_zoo.models.bayes_regression` with known noise."""
    loc, cov, log_evidence = linear_regression_posterior(features, y, prior_scale, noise_scale)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    noise = torch.randn(num_samples, loc.numel(), generator=generator, dtype=torch.float64, device="cpu")
    draws = loc.cpu() + noise @ torch.linalg.cholesky(cov.cpu()).T
    samples = {"weight": draws[:, :-1].float(), "bias": draws[:, -1].float()}
    return Reference("exact", ("weight", "bias"), samples, loc.cpu(), cov.cpu(), log_evidence)


def nuts_reference(
    model: Callable,
    args: Sequence[torch.Tensor],
    sites: Sequence[str],
    key: Dict,
    *,
    num_samples: int = 1000,
    warmup_steps: int = 500,
    seed: int = 0,
    progress: bool = True,
    directory: Optional[Path] = None,
) -> Reference:
    """Draws from NUTS (Hoffman & Gelman 2014, Pyro's MCMC), cached on disk.

    ``key`` names the model and its keywords; it is hashed together with the
    data and sampler settings. A corrupt cache file is ignored and rewritten.
    """
    directory = Path(directory) if directory is not None else cache_dir() / "references"
    digest = _digest(key, args, num_samples, warmup_steps, seed)
    path = directory / f"nuts-{digest}.pt"
    cached = _load_cached(path)
    if cached is not None:
        return Reference("nuts", tuple(sites), cached)
    mcmc = MCMC(NUTS(model), num_samples=num_samples, warmup_steps=warmup_steps, disable_progbar=not progress)
    with seeded(seed):
        mcmc.run(*args)
    samples = {site: value.detach().cpu() for site, value in mcmc.get_samples().items() if site in sites}
    atomic_torch_save(samples, path)
    return Reference("nuts", tuple(sites), samples)


def _digest(key, args, *settings) -> str:
    hasher = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode())
    for arg in args:
        hasher.update(arg.detach().cpu().contiguous().numpy().tobytes())
    hasher.update(repr(settings).encode())
    return hasher.hexdigest()[:20]


def _load_cached(path: Path):
    if not path.exists():
        return None
    try:
        return torch.load(path, weights_only=True)
    except Exception as error:  # a torn or foreign file: recompute rather than fail
        logger.warning("ignoring unreadable reference cache %s (%s); recomputing", path, error)
        return None
