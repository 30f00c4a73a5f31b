"""pyro_vi_zoo: a variational-inference model zoo for Pyro.

Plain Pyro models with hand-written mean-field guides, Pyro's auto guides by
name, one SVI runner, and one comparison of posterior quality across guides::

    import pyro_vi_zoo as zoo
    result = zoo.fit("bayes_regression", guide="auto_mvn", steps=2000)
    comparison = zoo.compare("bayes_regression", guides=["mean_field", "auto_mvn"])
    print(comparison.table)
"""

from .compare import Comparison, compare
from .data import Dataset
from .errors import DataError, DivergenceError, ZooError
from .guides.auto import GUIDES
from .registry import MODELS, ModelSpec, all_specs, get_spec
from .svi import FitResult, FitSettings, fit

__version__ = "0.1.0"


def load_dataset(model: str, data=None, **options) -> Dataset:
    """The data set ``model``'s loader makes of ``data`` (``None``: the embedded default)."""
    return get_spec(model).load_data(data, **options)


all_specs()

__all__ = [
    "MODELS", "GUIDES", "ModelSpec", "FitSettings", "FitResult", "Comparison", "Dataset",
    "ZooError", "DataError", "DivergenceError", "fit", "compare", "load_dataset", "get_spec", "all_specs",
]
