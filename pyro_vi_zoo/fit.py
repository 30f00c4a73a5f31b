"""``python -m pyro_vi_zoo.fit MODEL [options]``: the command line, whose code is :mod:`pyro_vi_zoo.cli`.

This module only runs it. Import :mod:`pyro_vi_zoo.cli` to call it from Python;
``pyro_vi_zoo.fit`` itself is the fitting function.
"""

import sys

from pyro_vi_zoo.cli import main

if __name__ == "__main__":
    sys.exit(main())
