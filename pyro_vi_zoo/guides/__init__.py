"""Hand-written mean-field guides (one per model) and Pyro's auto guides by name."""

from .auto import AUTO_GUIDES, GUIDES, GuideInfo, get_guide_info
from .bayes_regression import bayes_regression_guide
from .bnn_regression import bnn_regression_guide
from .gmm import gmm_mean_field

__all__ = [
    "AUTO_GUIDES", "GUIDES", "GuideInfo", "get_guide_info",
    "bayes_regression_guide", "bnn_regression_guide", "gmm_mean_field",
]
