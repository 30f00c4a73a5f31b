"""Forward versus reverse KL: one 2-D Gaussian q fitted to a two-component mixture p.

Minimising the reverse divergence KL(q || p) = E_q[log q - log p], what variational
inference does, makes q avoid regions where p is small: a single Gaussian settles
on one mode, and which one depends on where it starts ("zero-forcing"). Minimising
the forward divergence KL(p || q) = E_p[log p - log q] makes q cover every region
where p has mass: the optimum over Gaussians matches p's mean and covariance and
sits between the modes ("mass-covering"). Bishop (2006), Pattern Recognition and
Machine Learning, sec. 10.1.2 and fig. 10.3; Blei et al. (2017), sec. 2.

q is a 2-D Gaussian with diagonal covariance by default (the mean-field family of
this zoo). On this target that choice matters: with a full covariance, the lower
mode (0, 0), whose second-dimension sd of 0.5 reaches towards (1, 1), is not a
local optimum of the reverse KL; a tilted Gaussian bridging both modes has
KL(q || p) ~ 0.56 < log 2 and every start near (0, 0) slides there
(``covariance="full"`` shows it). A diagonal q cannot tilt, and each mode is a
local optimum (KL ~ 0.67).

How the fits are done:

* reverse KL: Pyro SVI with ``Trace_ELBO``. The model is the target density as a
  factor on an improper flat site, ``pyro.factor("target", log p(z))``, so for a
  normalised p the ELBO is exactly -KL(q || p); the guide is a full-covariance
  Gaussian (a ``PyroModule`` with module-local parameters), reparameterised.
* forward KL: plain PyTorch, the Monte Carlo estimate -mean log q(x_i) over fixed
  draws x_i ~ p (maximum likelihood of q on draws of p), by Adam; its exact optimum,
  the moment-matched Gaussian (:func:`moment_matched_gaussian`), is the check.

Figures are ``matplotlib.figure.Figure`` objects drawn without pyplot (no global
backend switch); :func:`pyro_vi_zoo.runs.save_figure` writes it as a PNG.

Both KL directions of each fit are estimated by Monte Carlo with standard errors
(:func:`reverse_kl_estimate`, :func:`forward_kl_estimate`).
"""

import io
import math
import os
from dataclasses import dataclass, field
from typing import Dict, List, Sequence

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from matplotlib.figure import Figure
from pyro.distributions import constraints
from pyro.nn import PyroModule, PyroParam

from ..data.mixture import default_mixture_parameters
from ..errors import ZooError

FAST_ENV = "PYRO_VI_ZOO_FAST"
COVARIANCES = ("diagonal", "full")


def fast_mode() -> bool:
    """True when the environment variable ``PYRO_VI_ZOO_FAST`` is set to a true value (tests, CI)."""
    return os.environ.get(FAST_ENV, "").strip().lower() not in ("", "0", "false", "no")


def mixture_target(weights=None, locs=None, scales=None) -> dist.MixtureSameFamily:
    """A diagonal Gaussian mixture as a torch distribution; the defaults are the zoo's default mixture."""
    truth = default_mixture_parameters()
    def as_tensor(value, name):
        return torch.as_tensor(truth[name] if value is None else value, dtype=torch.get_default_dtype())

    weights, locs, scales = as_tensor(weights, "weights"), as_tensor(locs, "locs"), as_tensor(scales, "scales")
    return dist.MixtureSameFamily(dist.Categorical(weights), dist.Normal(locs, scales).to_event(1))


def moment_matched_gaussian(target: dist.MixtureSameFamily, covariance="full") -> dist.MultivariateNormal:
    """The Gaussian with the mixture's mean and covariance (its diagonal for ``covariance="diagonal"``):
    the exact minimiser of KL(p || q) over that family of Gaussians q (Bishop 2006, sec. 10.7)."""
    weights = target.mixture_distribution.probs
    locs = target.component_distribution.base_dist.loc
    variances = target.component_distribution.base_dist.scale.square()
    mean = (weights.unsqueeze(-1) * locs).sum(0)
    centred = locs - mean
    within = (weights.unsqueeze(-1) * variances).sum(0).diag()
    between = (weights.view(-1, 1, 1) * centred.unsqueeze(-1) * centred.unsqueeze(-2)).sum(0)
    matrix = within + between
    return dist.MultivariateNormal(mean, covariance_matrix=matrix.diag().diag() if covariance == "diagonal" else matrix)


class GaussianGuide(PyroModule):
    """q(z) = MultivariateNormal(loc, scale_tril), a guide for the single site ``z``;
    ``covariance="diagonal"`` keeps scale_tril diagonal (mean-field), ``"full"`` learns it all."""

    def __init__(self, initial_loc, initial_scale, covariance="diagonal"):
        super().__init__()
        if covariance not in COVARIANCES:
            raise ZooError(f"covariance must be one of {COVARIANCES}, got {covariance!r}.")
        initial_loc = torch.as_tensor(initial_loc, dtype=torch.get_default_dtype())
        dim = len(initial_loc)
        self.covariance = covariance
        self.loc = PyroParam(initial_loc.clone())
        if covariance == "full":
            self.scale_tril = PyroParam(initial_scale * torch.eye(dim), constraint=constraints.lower_cholesky)
        else:
            self.scale = PyroParam(torch.full((dim,), float(initial_scale)), constraint=constraints.positive)

    def distribution(self) -> dist.MultivariateNormal:
        scale_tril = self.scale_tril if self.covariance == "full" else self.scale.diag_embed()
        return dist.MultivariateNormal(self.loc, scale_tril=scale_tril)

    def forward(self, log_density=None):
        return pyro.sample("z", self.distribution())


def target_as_model(log_density, dim):
    """A Pyro model whose posterior is ``exp(log_density)``: a flat improper site plus a factor."""

    def model(log_density=log_density):
        z = pyro.sample("z", dist.ImproperUniform(constraints.real_vector, (), (dim,)))
        pyro.factor("target", log_density(z))
        return z

    return model


@dataclass
class GaussianFit:
    """A fitted Gaussian q, the divergence it minimised, its loss trace and Monte Carlo KL estimates."""

    direction: str
    q: dist.MultivariateNormal
    losses: List[float]
    initial_loc: Sequence[float] = None
    kl: Dict[str, tuple] = field(default_factory=dict)

    @property
    def mean(self) -> np.ndarray:
        return self.q.loc.detach().numpy()

    @property
    def covariance(self) -> np.ndarray:
        return self.q.covariance_matrix.detach().numpy()


def fit_reverse_kl(
    target, initial_loc, initial_scale=0.2, covariance="diagonal", num_steps=1000, num_particles=16, lr=0.02, seed=0
) -> GaussianFit:
    """Minimise KL(q || target) from ``initial_loc`` with Pyro SVI (reparameterised, vectorised particles)."""
    model = target_as_model(target.log_prob, target.event_shape[-1])
    elbo = pyro.infer.Trace_ELBO(num_particles=num_particles, vectorize_particles=True, max_plate_nesting=0)
    losses = []
    with pyro.settings.context(module_local_params=True), torch.random.fork_rng():
        torch.manual_seed(seed)
        guide = GaussianGuide(initial_loc, initial_scale, covariance)
        loss_fn = elbo(model, guide)
        loss_fn()
        optimizer = torch.optim.Adam(loss_fn.parameters(), lr=lr)
        for _ in range(num_steps):
            optimizer.zero_grad()
            loss = loss_fn()
            loss.backward()
            optimizer.step()
            losses.append(loss.detach())
        q = _detached(guide.distribution())
    return GaussianFit("reverse", q, torch.stack(losses).tolist(), initial_loc=list(initial_loc))


def fit_forward_kl(
    target, covariance="diagonal", num_samples=4000, num_steps=1000, lr=0.05, initial_loc=(0.0, 0.0), seed=0
) -> GaussianFit:
    """Minimise the Monte Carlo estimate of KL(target || q) over ``num_samples`` fixed target draws, with Adam."""
    losses = []
    with pyro.settings.context(module_local_params=True), torch.random.fork_rng():
        torch.manual_seed(seed)
        guide = GaussianGuide(initial_loc, 1.0, covariance)
        draws = target.sample((num_samples,))
        optimizer = torch.optim.Adam(guide.parameters(), lr=lr)
        for _ in range(num_steps):
            optimizer.zero_grad()
            loss = -guide.distribution().log_prob(draws).mean()
            loss.backward()
            optimizer.step()
            losses.append(loss.detach())
        q = _detached(guide.distribution())
    return GaussianFit("forward", q, torch.stack(losses).tolist(), initial_loc=list(initial_loc))


def _detached(q):
    return dist.MultivariateNormal(q.loc.detach(), scale_tril=q.scale_tril.detach())


def reverse_kl_estimate(q, log_p, num_samples=10000, seed=0):
    """Monte Carlo KL(q || p) = E_q[log q(z) - log p(z)], z ~ q; returns (estimate, standard error)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        z = q.sample((num_samples,))
    return _mean_and_standard_error(q.log_prob(z) - log_p(z))


def forward_kl_estimate(p, q, num_samples=10000, seed=0):
    """Monte Carlo KL(p || q) = E_p[log p(x) - log q(x)], x ~ p; returns (estimate, standard error)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        x = p.sample((num_samples,))
    return _mean_and_standard_error(p.log_prob(x) - q.log_prob(x))


def _mean_and_standard_error(values):
    values = values.detach().double()
    return float(values.mean()), float(values.std() / math.sqrt(len(values)))


def kl_directions_experiment(fast=None, seed=0, covariance="diagonal") -> Dict[str, GaussianFit]:
    """Fit the default mixture three times: reverse KL from two starts, and forward KL.

    Returns ``{"reverse_from_lower_left", "reverse_from_upper_right", "forward"}`` fits, each
    with ``kl["reverse"]`` and ``kl["forward"]`` Monte Carlo estimates (estimate, standard error).
    ``fast`` (default: :func:`fast_mode`) cuts steps and samples for tests.
    """
    fast = fast_mode() if fast is None else fast
    steps, samples = (250, 2000) if fast else (2000, 20000)
    target = mixture_target()
    reverse = dict(covariance=covariance, num_steps=steps, lr=0.02)
    fits = {
        "reverse_from_lower_left": fit_reverse_kl(target, (-0.3, -0.3), seed=seed, **reverse),
        "reverse_from_upper_right": fit_reverse_kl(target, (1.3, 1.3), seed=seed + 1, **reverse),
        "forward": fit_forward_kl(target, covariance, num_samples=samples, num_steps=steps, lr=0.05, seed=seed + 2),
    }
    for fit in fits.values():
        fit.kl["reverse"] = reverse_kl_estimate(fit.q, target.log_prob, samples, seed=seed + 3)
        fit.kl["forward"] = forward_kl_estimate(target, fit.q, samples, seed=seed + 4)
    return fits


def plot_kl_directions(target, fits: Dict[str, GaussianFit], grid_size=150):
    """Contours of the target density with each fitted q's 1- and 2-sd ellipses on top; one panel per fit."""
    figure = Figure(figsize=(3.6 * len(fits), 4.4))
    axes = np.atleast_1d(figure.subplots(1, len(fits), sharex=True, sharey=True))
    xs, ys, density = _density_grid(target, grid_size)
    for axis, (name, fit) in zip(axes, fits.items()):
        axis.contourf(xs, ys, density, levels=12, cmap="Greys")
        _draw_gaussian(axis, fit.mean, fit.covariance, color="tab:red" if fit.direction == "reverse" else "tab:blue")
        reverse, forward = fit.kl.get("reverse", (math.nan, 0)), fit.kl.get("forward", (math.nan, 0))
        axis.set_title(f"{name.replace('_', ' ')}\nKL(q||p) = {reverse[0]:.3f}, KL(p||q) = {forward[0]:.3f}", fontsize=9)
        axis.set_xlabel("x1")
        axis.set_aspect("equal")
    axes[0].set_ylabel("x2")
    figure.tight_layout()
    return figure


def _density_grid(target, grid_size):
    xs = np.linspace(-1.0, 2.0, grid_size)
    ys = np.linspace(-1.5, 2.5, grid_size)
    grid = torch.as_tensor(np.stack(np.meshgrid(xs, ys), -1), dtype=torch.get_default_dtype())
    return xs, ys, target.log_prob(grid).exp().numpy()


def _draw_gaussian(axis, mean, covariance, color):
    """The 1- and 2-standard-deviation ellipses of N(mean, covariance), and its mean."""
    values, vectors = np.linalg.eigh(covariance)
    angle = np.linspace(0, 2 * np.pi, 200)
    circle = np.stack([np.cos(angle), np.sin(angle)])
    for radius, style in ((1, "-"), (2, "--")):
        ellipse = mean[:, None] + vectors @ (radius * np.sqrt(values)[:, None] * circle)
        axis.plot(ellipse[0], ellipse[1], style, color=color, linewidth=1.5)
    axis.plot(*mean, "x", color=color, markersize=8)


def figure_png(figure, dpi=110) -> bytes:
    """``figure`` rendered to PNG bytes (for ``IPython.display.Image`` without a pyplot backend)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, dpi=dpi, format="png")
    return buffer.getvalue()
