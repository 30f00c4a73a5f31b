"""Hand-written mean-field guides (one per model) and Pyro's auto guides by name."""

from .auto import AUTO_GUIDES, GUIDES, GuideInfo, get_guide_info
from .autorec import AutoRecMeanField, autorec_mean_field
from .bayes_regression import bayes_regression_guide
from .bnn_regression import bnn_regression_guide
from .gmm import gmm_mean_field
from .vae import Encoder, vae_mean_field_guide

__all__ = [
    "AUTO_GUIDES", "GUIDES", "GuideInfo", "get_guide_info",
    "AutoRecMeanField", "autorec_mean_field", "bayes_regression_guide", "bnn_regression_guide", "gmm_mean_field",
    "Encoder", "vae_mean_field_guide",
]
