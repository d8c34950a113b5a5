"""``python -m mosaic_encoder``: the ``mosaic-encoder`` command line."""

import sys

from .cli import main

sys.exit(main())
