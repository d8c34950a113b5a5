"""Other libraries' log lines, kept out of the command's output where they are noise."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path


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


@contextlib.contextmanager
def stderr_to(path: Path) -> Iterator[None]:
    """File descriptor 2 appended to ``path`` while the block runs, then restored: what native
    code (Ray's C++ core) and Python's ``sys.stderr`` write meanwhile goes to the file. With
    descriptor 2 closed there is nothing to keep clean, and the block runs as it is."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(path, "ab") as log:
            os.dup2(log.fileno(), 2)
            try:
                yield
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
    finally:
        os.close(saved)
