"""``python -m pyro_vi_zoo.fit MODEL [options]``: the command line, whose code is :mod:`pyro_vi_zoo.cli`.

This module only runs it. Import :mod:`pyro_vi_zoo.cli` to call it from Python. ``pyro_vi_zoo.fit`` is
also the fitting function: importing this module (``python -m``, the console script) would otherwise put
the module where ``zoo.fit`` was, so the module itself calls :func:`pyro_vi_zoo.runner.fit`.
"""

import inspect
import sys
import types

from pyro_vi_zoo.cli import main


class _FitModule(types.ModuleType):
    """This module, callable as :func:`pyro_vi_zoo.runner.fit` (with its signature, for ``help`` and IDEs)."""

    def __call__(self, *args, **kwargs):
        from pyro_vi_zoo.runner import fit

        return fit(*args, **kwargs)

    @property
    def __signature__(self):
        from pyro_vi_zoo.runner import fit

        return inspect.signature(fit)


sys.modules[__name__].__class__ = _FitModule

if __name__ == "__main__":
    sys.exit(main())
