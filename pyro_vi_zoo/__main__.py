"""``python -m pyro_vi_zoo MODEL`` is ``python -m pyro_vi_zoo.fit MODEL``."""

import sys

from .fit import main

sys.exit(main())
