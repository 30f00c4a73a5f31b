"""pyro_vi_zoo: a variational-inference model zoo for Pyro.

Plain Pyro models with hand-written mean-field guides, Pyro's auto guides by
name, one SVI runner, and one comparison of posterior quality across guides::

    import pyro_vi_zoo as zoo
    result = zoo.fit("bayes_regression", guide="auto_mvn", steps=2000)
    comparison = zoo.compare("bayes_regression", guides=["mean_field", "auto_mvn"])
    print(comparison.table)

The same runner takes a user's own Pyro model: ``zoo.compare(model, data=(x, y))``.
Everything is imported on first use, so ``import pyro_vi_zoo`` costs little more
than ``import pyro``.
"""

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "fit": "runner", "compare": "runner", "Comparison": "runner",
    "FitSettings": "engine.settings", "FitResult": "engine.result",
    "Family": "family", "Setup": "family", "Option": "family",
    "MODELS": "registry", "get_family": "registry", "all_families": "registry",
    "GUIDES": "guides.auto",
    "Dataset": "data.dataset",
    "ZooError": "errors", "DataError": "errors", "DivergenceError": "errors",
}


def load_dataset(model: str, data=None, **options):
    """The data set ``model``'s loader makes of ``data`` (``None``: the embedded default)."""
    return __getattr__("get_family")(model).load_data(data, **options)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'pyro_vi_zoo' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + list(_EXPORTS))


__all__ = sorted(list(_EXPORTS) + ["load_dataset"])
