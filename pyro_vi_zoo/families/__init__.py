"""Model families: each module builds and registers the ModelSpec of one model."""

from . import bayes_regression  # noqa: F401
from . import gmm  # noqa: F401
from . import bnn_regression  # noqa: F401
