"""Scoring fitted guides: pure metrics, diagnostics that run a fitted guide, reference posteriors,
and the two shared scorers (global latents; local latents per example)."""

from .global_latents import Baseline, Budget, GlobalLatentScoring
from .local_latents import LocalLatentScoring
from .references import Reference

__all__ = ["Baseline", "Budget", "GlobalLatentScoring", "LocalLatentScoring", "Reference"]
