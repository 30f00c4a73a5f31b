"""The zoo's Pyro models: plain model functions (or PyroModules), pure and reusable in any Pyro program."""

from .autorec import BayesianAutoRec, autorec
from .bayes_regression import bayes_regression
from .bnn_regression import BayesianMLP, bnn_regression
from .gmm import gmm
from .vae import Decoder, vae

__all__ = ["autorec", "BayesianAutoRec", "bayes_regression", "bnn_regression", "BayesianMLP", "gmm", "vae", "Decoder"]
