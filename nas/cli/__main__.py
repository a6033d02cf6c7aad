"""``python -m nas.cli``: the ``nas`` console script."""

import sys

from . import main

sys.exit(main())
