"""The SVI engine: settings, the step and its loop, fitting with restarts, and the fitted result.

It takes models, guide factories and tensors as arguments; it never imports the
registry or a family, so anything above it (the runner, a user's script) can use it.
"""

from .fit import fit_guide, make_step, seeded
from .result import FitResult, latent_site_shapes, latent_sites, parameter_scope
from .settings import DEFAULTS, UNSET, FitSettings, resolve_settings
from .step import ELBOS, SVIStep, make_elbo, run_steps

__all__ = ["FitSettings", "FitResult", "DEFAULTS", "UNSET", "ELBOS", "SVIStep", "fit_guide", "make_step", "make_elbo",
           "run_steps", "resolve_settings", "latent_sites", "latent_site_shapes", "parameter_scope", "seeded"]
