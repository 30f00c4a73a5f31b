"""The model registry: family name -> the module that defines it, imported on first use.

One line per family. Families are imported lazily, so ``import pyro_vi_zoo``
stays cheap and the registry never imports upwards.
"""

import importlib
from typing import Dict

from .errors import ZooError

FAMILY_MODULES: Dict[str, str] = {
    "bayes_regression": "pyro_vi_zoo.families.bayes_regression",
    "bnn_regression": "pyro_vi_zoo.families.bnn_regression",
    "gmm": "pyro_vi_zoo.families.gmm",
    "vae": "pyro_vi_zoo.families.vae",
    "autorec": "pyro_vi_zoo.families.autorec",
}

MODELS = tuple(FAMILY_MODULES)


def get_family(name_or_family):
    """The :class:`~pyro_vi_zoo.family.Family` for a name (a family passes through); an unknown
    name raises a :class:`ZooError` listing the valid ones."""
    if not isinstance(name_or_family, str):
        return name_or_family
    try:
        module = FAMILY_MODULES[name_or_family]
    except KeyError:
        raise ZooError(f"unknown model {name_or_family!r}; choose one of: {', '.join(MODELS)}.") from None
    return importlib.import_module(module).FAMILY


def all_families():
    """Every registered family, by name, in registry order (imports them)."""
    return {name: get_family(name) for name in FAMILY_MODULES}
