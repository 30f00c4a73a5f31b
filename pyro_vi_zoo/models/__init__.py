"""The zoo's Pyro models: plain model functions (or PyroModules), pure and reusable in any Pyro program."""

from .bayes_regression import bayes_regression
from .bnn_regression import BayesianMLP, bnn_regression
from .gmm import gmm

__all__ = ["bayes_regression", "bnn_regression", "BayesianMLP", "gmm"]
