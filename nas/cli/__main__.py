"""``python -m nas.cli``: the ``nas`` console script."""

import sys

from nas.cli import main

sys.exit(main())
