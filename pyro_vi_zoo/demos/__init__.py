"""Demonstrations used by the notebooks: small, self-contained experiments, not part of the runner."""
