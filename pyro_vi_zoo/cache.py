"""Where the zoo caches downloads and reference posteriors: ``$PYRO_VI_ZOO_CACHE`` or ``~/.cache/pyro_vi_zoo``."""

import os
from pathlib import Path


def cache_dir() -> Path:
    """The cache root; the environment variable wins, so tests and CI can point it at a temporary folder."""
    return Path(os.environ.get("PYRO_VI_ZOO_CACHE") or Path.home() / ".cache" / "pyro_vi_zoo")
