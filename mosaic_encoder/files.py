"""Opening the files of a checkpoint directory without hanging, escaping it, or blowing up.

Every file a checkpoint names (``config.json``, index shards, ``modules.json`` entries, pooling and
sentence-transformers configs) is checked with :func:`regular_file` before it is opened: a FIFO or
device in its place would block ``open`` forever or stream without end, and a path that resolves
outside the checkpoint directory (``../``, an absolute path, a symlink target) is not part of it.
:func:`read_json` adds a size cap and turns every parse failure Python's ``json`` can raise
(``RecursionError`` on deep nesting, ``ValueError`` on integers past the conversion digit limit)
into one sentence.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from .errors import CheckpointError, MosaicError
from .inputs import json_type, parse_json

# No configuration file of a checkpoint comes near this; a larger one is not one of them.
MAX_JSON_BYTES = 64 << 20


def regular_file(path: str | Path, what: str, root: str | Path | None = None,
                 error: type[MosaicError] = CheckpointError) -> Path:
    """``path``, after refusing anything but an existing regular file (inside ``root`` if given).

    ``stat`` does not open the file, so a FIFO is refused without blocking. Symlinks are followed
    and their target must lie inside ``root`` too.
    """
    path = Path(path)
    if root is not None:
        inside(path, root, what, error)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise error(f"{what} {path} does not exist.") from None
    except OSError as err:
        raise error(f"{what} {path} cannot be read ({err.strerror}).") from None
    if not stat.S_ISREG(mode):
        raise error(f"{what} {path} is not a regular file.")
    return path


def inside(path: str | Path, root: str | Path, what: str,
           error: type[MosaicError] = CheckpointError) -> Path:
    """``path`` resolved, refusing it when it lies outside ``root`` (after following symlinks)."""
    resolved, base = Path(path).resolve(), Path(root).resolve()
    if not resolved.is_relative_to(base):
        raise error(f"{what} {path} resolves to {resolved}, outside the checkpoint directory "
                    f"{root}.")
    return resolved


def read_json(path: str | Path, what: str, root: str | Path | None = None,
              error: type[MosaicError] = CheckpointError) -> Any:
    """The JSON value in a regular file of at most :data:`MAX_JSON_BYTES`; callers check its shape."""
    path = regular_file(path, what, root, error)
    try:
        with open(path, "rb") as stream:
            data = stream.read(MAX_JSON_BYTES + 1)
    except OSError as err:
        raise error(f"{what} {path} cannot be read ({err.strerror}).") from None
    if len(data) > MAX_JSON_BYTES:
        raise error(f"{what} {path} is larger than {MAX_JSON_BYTES >> 20} MiB, too large for a "
                    f"configuration file.")
    return parse_json(data, f"{what} {path}", error)


def json_object(value: Any, what: str, path: str | Path,
                error: type[MosaicError] = CheckpointError) -> dict[str, Any]:
    """``value`` when it is a JSON object, else one sentence naming the file."""
    if not isinstance(value, dict):
        raise error(f"{what} {path} must hold a JSON object, got {json_type(value)}.")
    return value


def short(value: object, limit: int = 60, quote: bool = False) -> str:
    """Text of a value read from a file, cut to ``limit`` characters; strings are quoted only
    with ``quote`` (tensor names read better bare, config values quoted)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"a {value.bit_length()}-bit integer"
    text = value if isinstance(value, str) and not quote else repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."
