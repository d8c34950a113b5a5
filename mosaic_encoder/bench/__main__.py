"""``python -m mosaic_encoder.bench``: see :mod:`mosaic_encoder.bench.cli`."""

import sys

from .cli import main

sys.exit(main())
