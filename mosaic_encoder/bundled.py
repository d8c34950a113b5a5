"""Where the bundled random-weight checkpoints (``weights/`` in the repository) are.

A wheel ships them as package data inside this package (``mosaic_encoder/weights``, mapped from
the repository's top-level ``weights/`` by ``package_dir`` in ``setup.cfg``); a source checkout
or an editable install reads them from ``weights/`` beside the package.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
WEIGHTS_DIR = _PACKAGE / "weights" if (_PACKAGE / "weights").is_dir() else _PACKAGE.parent / "weights"
BUNDLED_CHECKPOINT = WEIGHTS_DIR / "mosaic-tiny"
BUNDLED_MLM_CHECKPOINT = WEIGHTS_DIR / "mosaic-tiny-mlm"
