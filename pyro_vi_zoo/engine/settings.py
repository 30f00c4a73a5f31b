"""Fit settings and how they are resolved: explicit beats the family's default beats the global default.

A :class:`FitSettings` made by a user holds only what they chose; every other
field is :data:`UNSET`. :func:`resolve_settings` layers the global defaults,
the family's defaults and the user's choices, so ``FitSettings(lr=0.05)`` means
lr 0.05 even where 0.05 happens to be the global default.
"""

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional

from ..errors import ZooError

ELBO_NAMES = ("trace", "meanfield", "stl", "score", "tracegraph", "renyi", "iwae", "iwae_dreg", "enum", "jit",
              "jit_meanfield", "jit_enum")
OPTIMIZERS = ("adam", "clipped_adam")


class _Unset:
    """The value of a setting nobody chose."""

    def __repr__(self):
        return "UNSET"

    def __bool__(self):
        return False


UNSET: Any = _Unset()

DEFAULTS: Dict[str, Any] = dict(
    steps=1500, lr=0.05, lr_decay=0.1, optimizer="adam", clip_norm=10.0, elbo="trace", num_particles=1,
    batch_size=None, epochs=None, restarts=1, seed=None, device="auto", capture="auto", log_every=50, validate=False,
    progress=True,
)


@dataclass(frozen=True)
class FitSettings:
    """How to fit. Every field has a command-line flag of the same name in kebab case.

    Fields left out are filled by :func:`resolve_settings` from the family's
    defaults, then from :data:`DEFAULTS`. ``lr_decay`` is the final learning
    rate as a fraction of ``lr`` (exponential decay over ``steps``; 1.0 keeps it
    constant). ``restarts`` > 1 runs that many pilots of ``steps // 10`` steps and
    continues the best by ELBO (mixtures' cure for bad local optima).
    ``batch_size`` turns on minibatch SVI through the model's subsampled plate; for
    families that train by epochs (a model that takes its batch as arguments),
    ``epochs`` sets ``steps`` to epochs × batches per epoch.
    ``seed`` ``None`` uses the caller's random state as it is; a seed makes the fit
    reproducible and leaves the caller's random state as it found it.
    ``validate`` checks distribution arguments at every step, not only at the
    warm-up call. ``capture`` records the step as a CUDA graph: ``auto`` on CUDA,
    ``on`` (CUDA required), ``off``.
    """

    steps: int = UNSET
    lr: float = UNSET
    lr_decay: float = UNSET
    optimizer: str = UNSET
    clip_norm: float = UNSET
    elbo: str = UNSET
    num_particles: int = UNSET
    batch_size: Optional[int] = UNSET
    epochs: Optional[int] = UNSET
    restarts: int = UNSET
    seed: Optional[int] = UNSET
    device: str = UNSET
    capture: str = UNSET
    log_every: int = UNSET
    validate: bool = UNSET
    progress: bool = UNSET

    def chosen(self) -> Dict[str, Any]:
        """The fields that were set, by name."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not UNSET}

    def replace(self, **changes) -> "FitSettings":
        """A copy with ``changes``; an unknown field name is a :class:`ZooError` listing the valid ones."""
        unknown = set(changes) - set(DEFAULTS)
        if unknown:
            raise ZooError(f"unknown fit setting(s) {sorted(unknown)}; valid: {sorted(DEFAULTS)}.")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


def resolve_settings(family_defaults: Mapping[str, Any], settings: Optional[FitSettings] = None,
                     overrides: Optional[Mapping[str, Any]] = None) -> FitSettings:
    """Global defaults, then the family's, then ``settings``' chosen fields, then ``overrides``; validated."""
    merged = dict(DEFAULTS)
    merged.update(family_defaults)
    if settings is not None:
        merged.update(settings.chosen())
    resolved = FitSettings().replace(**merged).replace(**dict(overrides or {}))
    return validate(resolved)


def validate(settings: FitSettings) -> FitSettings:
    """``settings`` unchanged, or a :class:`ZooError` naming the first bad value and what it must be."""
    s = settings
    _require(isinstance(s.steps, int) and s.steps >= 1, f"steps must be a positive integer, got {s.steps}.")
    _require(s.lr > 0 and math.isfinite(s.lr), f"lr must be positive and finite, got {s.lr}.")
    _require(0 < s.lr_decay <= 1, f"lr_decay must lie in (0, 1], got {s.lr_decay}.")
    _require(s.num_particles >= 1, f"num_particles must be at least 1, got {s.num_particles}.")
    _require(s.restarts >= 1, f"restarts must be at least 1, got {s.restarts}.")
    _require(s.log_every >= 1, f"log_every must be at least 1, got {s.log_every}.")
    _require(s.batch_size is None or s.batch_size >= 1, f"batch_size must be positive, got {s.batch_size}.")
    _require(s.epochs is None or s.epochs >= 1, f"epochs must be a positive integer, got {s.epochs}.")
    _require(s.elbo in ELBO_NAMES, f"unknown elbo {s.elbo!r}; choose one of: {', '.join(ELBO_NAMES)}.")
    _require(s.optimizer in OPTIMIZERS, f"unknown optimizer {s.optimizer!r}; choose one of: {', '.join(OPTIMIZERS)}.")
    _require(s.clip_norm > 0, f"clip_norm must be positive, got {s.clip_norm}.")
    _require(s.capture in ("auto", "on", "off"), f"unknown capture {s.capture!r}; choose one of: auto, on, off.")
    return settings


def _require(condition, message):
    if not condition:
        raise ZooError(message)
