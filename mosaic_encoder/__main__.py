"""``python -m mosaic_encoder``: the same command line as ``mosaic-encoder``."""

import sys

from .cli import main

sys.exit(main())
