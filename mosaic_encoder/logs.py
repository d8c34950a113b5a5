"""Other libraries' log lines, kept out of the command's output where they are noise."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator


@contextlib.contextmanager
def quieted(name: str) -> Iterator[None]:
    """Logger ``name`` (another library's) shows errors only while the block runs; its level is
    restored afterwards, whatever the block raised."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
