"""Posterior-quality metrics: pure functions of samples, log densities and data.

Nothing here runs a model; callers hand in tensors. Each function states the
estimator and its reference.
"""

import math
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
from pyro.ops.stats import fit_generalized_pareto
from scipy.stats import wasserstein_distance


def log_predictive_density(log_likelihood: torch.Tensor) -> float:
    """Mean over points of log (1/S) Σ_s p(y_i | θ_s): the held-out log predictive density per point.

    ``log_likelihood`` has shape (S, N): S posterior draws by N held-out points
    (Gelman, Hwang & Vehtari 2014, eq. 1, divided by N).
    """
    log_likelihood = log_likelihood.double().reshape(log_likelihood.shape[0], -1)
    num_samples = log_likelihood.shape[0]
    return float((torch.logsumexp(log_likelihood, 0) - math.log(num_samples)).mean())


def rmse(prediction: torch.Tensor, target: torch.Tensor) -> float:
    """Root mean squared error of a point prediction."""
    return float((prediction.double() - target.double()).pow(2).mean().sqrt())


def interval_coverage(samples: torch.Tensor, target: torch.Tensor, level: float = 0.9) -> Tuple[float, float]:
    """Coverage and mean width of the central ``level`` interval of predictive draws.

    ``samples`` (S, N) are draws of y; returns the fraction of ``target`` inside
    the per-point [(1−level)/2, (1+level)/2] sample quantiles, and the mean width.
    """
    tail = (1.0 - level) / 2.0
    quantiles = torch.tensor([tail, 1.0 - tail], dtype=torch.float64, device=samples.device)
    lower, upper = torch.quantile(samples.double(), quantiles, dim=0)
    target = target.double()
    inside = (target >= lower) & (target <= upper)
    return float(inside.double().mean()), float((upper - lower).mean())


def elbo_from_log_weights(log_weights: torch.Tensor) -> float:
    """The ELBO estimate E_q[log p(x, z) − log q(z)]: the mean of importance log-weights."""
    return float(log_weights.double().mean())


def count_nonfinite(log_weights: torch.Tensor) -> int:
    """How many log-weights are NaN or +inf (a broken density or a guide with mass where the model has none
    in the other direction); −inf is a weight of zero and counts as finite."""
    log_weights = log_weights.detach().cpu().double().flatten()
    return int((torch.isnan(log_weights) | (log_weights == math.inf)).sum())


#: log-weights within this of each other are equal: an importance sampler that is exact to 1%
FLAT = 0.01


def pareto_khat(log_weights: torch.Tensor) -> float:
    """PSIS Pareto k̂ of importance log-weights log p(x, z) − log q(z), z ~ q (Yao et al. 2018).

    k̂ < 0.5: q is good; 0.5–0.7: usable; > 0.7: unreliable. Fits a generalised
    Pareto distribution (Zhang & Stephens 2009, via Pyro) to the largest
    M = min(0.2 S, 3 √S) weights, as in Vehtari et al. (2015). Weights equal to
    within 1% (q is the posterior, up to the float32 rounding of log p and log q)
    are bounded, which PSIS reports as −inf. Tail weights that spread past
    float64's range (log-weights hundreds of nats apart) make k̂ +inf, as does a NaN or +inf
    log-weight (count those with :func:`count_nonfinite`); −inf log-weights are zero
    weights and stay in. Runs on the CPU in float64.
    """
    log_weights = log_weights.detach().cpu().double().flatten()
    if count_nonfinite(log_weights):
        return math.inf
    num = log_weights.numel()
    if num < 50:
        return float("nan")
    log_weights = torch.sort(log_weights - log_weights.max())[0]
    if float(log_weights[0]) > -FLAT:
        return float("-inf")
    tail_size = int(math.ceil(min(0.2 * num, 3.0 * math.sqrt(num))))
    cutoff = float(log_weights[-tail_size - 1])
    tail = log_weights[log_weights > cutoff]
    excess = tail.exp() - math.exp(cutoff)
    if tail.numel() < 5 or float(excess.max()) <= 0.0:
        return float("nan")
    try:
        with torch.device("cpu"):  # Pyro's fit makes tensors on the default device, which a user may set to CUDA
            k, _ = fit_generalized_pareto(excess)
    except ZeroDivisionError:  # tail weights that underflow to zero: far heavier than k̂ = 0.7
        return math.inf if bool((excess == 0).any()) else float("nan")
    return float(k)


def gaussian_kl(loc_q, cov_q, loc_p, cov_p) -> float:
    """KL(N(loc_q, cov_q) ‖ N(loc_p, cov_p)) in closed form (float64)."""
    loc_q, cov_q, loc_p, cov_p = (torch.as_tensor(a, dtype=torch.float64, device="cpu")
                                  for a in (loc_q, cov_q, loc_p, cov_p))
    dim = loc_q.numel()
    chol_p = torch.linalg.cholesky(cov_p)
    chol_q = torch.linalg.cholesky(cov_q)
    solved = torch.cholesky_solve(cov_q, chol_p)
    diff = (loc_p - loc_q).unsqueeze(-1)
    mahalanobis = float((diff.T @ torch.cholesky_solve(diff, chol_p)).squeeze())
    log_det = 2.0 * float(chol_p.diagonal().log().sum() - chol_q.diagonal().log().sum())
    return 0.5 * (float(solved.diagonal().sum()) + mahalanobis - dim + log_det)


def flatten_samples(samples: Dict[str, torch.Tensor], sites: Sequence[str]) -> Tuple[np.ndarray, List[str]]:
    """Stack the draws of ``sites`` into an (S, D) float64 array with a label per column (``weight[2]``)."""
    columns, labels = [], []
    for site in sites:
        draws = samples[site].detach().double().cpu()
        draws = draws.reshape(draws.shape[0], -1)
        columns.append(draws.numpy())
        width = draws.shape[1]
        labels += [site] if width == 1 else [f"{site}[{i}]" for i in range(width)]
    return np.concatenate(columns, axis=1), labels


def reference_distances(draws: np.ndarray, reference: np.ndarray) -> Dict[str, float]:
    """Distances from approximate posterior draws (S, D) to reference draws (R, D), per coordinate then averaged.

    - ``w1_sd``: marginal Wasserstein-1 distance in units of the reference sd;
    - ``mean_error_sd``: |mean − reference mean| in reference sds;
    - ``std_ratio``: sd / reference sd (1 is right; mean-field is typically below 1);
    - ``corr_error``: largest absolute error of the correlation matrix (0 for D = 1).
    """
    draws, reference = np.asarray(draws, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    ref_sd = reference.std(0)
    ref_sd = np.where(ref_sd > 0, ref_sd, 1.0)
    w1 = [wasserstein_distance(draws[:, j], reference[:, j]) for j in range(reference.shape[1])]
    out = {
        "w1_sd": float(np.mean(np.asarray(w1) / ref_sd)),
        "mean_error_sd": float(np.mean(np.abs(draws.mean(0) - reference.mean(0)) / ref_sd)),
        "std_ratio": float(np.mean(draws.std(0) / ref_sd)),
        "corr_error": 0.0,
    }
    if reference.shape[1] > 1:
        out["corr_error"] = float(np.nanmax(np.abs(_corr(draws) - _corr(reference))))
    return out


def _corr(values: np.ndarray) -> np.ndarray:
    sd = values.std(0)
    if np.any(sd == 0):  # a point mass has no correlation; count it as uncorrelated
        sd = np.where(sd == 0, np.inf, sd)
    centred = values - values.mean(0)
    return (centred.T @ centred / len(values)) / np.outer(sd, sd) + np.diag(sd == np.inf)
