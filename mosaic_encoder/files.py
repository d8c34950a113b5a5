"""Opening the files of a checkpoint directory without hanging, escaping it, or blowing up.

Every file a checkpoint names (``config.json``, index shards, ``modules.json`` entries, pooling and
sentence-transformers configs) is checked with :func:`regular_file` before it is opened: a FIFO or
device in its place would block ``open`` forever or stream without end, and a path that resolves
outside the checkpoint directory (``../``, an absolute path, a symlink target) is not part of it,
except in a Hugging Face cache snapshot, whose files are symlinks into its repository's
``blobs/``: there a link may lead anywhere inside the same ``models--*`` folder, and nowhere else.
:func:`read_json` adds a size cap and turns every parse failure Python's ``json`` can raise
(``RecursionError`` on deep nesting, ``ValueError`` on integers past the conversion digit limit)
into one sentence. Names read from files reach messages through :func:`short` or
:func:`printable`, which escape control characters: a tensor or file name holding a newline or
an ANSI escape cannot forge lines (a fake traceback) or colours in what the user reads.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import Any

from .errors import CheckpointError, MosaicError
from .hub import cache_repository
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
        raise error(f"{what} {printable(path)} does not exist.") from None
    except ValueError:
        raise error(f"{what} {printable(path)} is not a valid path (it holds a NUL byte).") \
            from None
    except OSError as err:
        raise error(f"{what} {printable(path)} cannot be read ({err.strerror}).") from None
    if not stat.S_ISREG(mode):
        raise error(f"{what} {printable(path)} is not a regular file.")
    return path


def inside(path: str | Path, root: str | Path, what: str,
           error: type[MosaicError] = CheckpointError) -> Path:
    """``path`` resolved, refusing it when it lies outside ``root`` (after following symlinks),
    when its symlinks form a loop, or when it cannot be a path (a NUL byte).

    When ``root`` is (inside) a Hugging Face cache snapshot, the resolved target may lie anywhere
    in the snapshot's ``models--*`` repository folder (its ``blobs/``), provided ``path`` itself,
    before any link is followed, lies in ``root``.
    """
    resolved, base = resolve(path, what, error), resolve(root, what, error)
    if resolved.is_relative_to(base):
        return resolved
    repository = cache_repository(base)
    if repository is None:
        raise error(f"{what} {printable(path)} resolves to {printable(resolved)}, outside the "
                    f"checkpoint directory {printable(root)} (copy the file into it).")
    lexical = Path(os.path.abspath(path)).is_relative_to(os.path.abspath(root))
    if not (lexical and resolved.is_relative_to(repository)):
        raise error(f"{what} {printable(path)} resolves to {printable(resolved)}, outside the "
                    f"Hugging Face cache repository {printable(repository)} of the snapshot.")
    return resolved


def resolve(path: str | Path, what: str, error: type[MosaicError] = CheckpointError) -> Path:
    """``Path(path).resolve()``, with a symlink loop or a NUL byte as one sentence naming it."""
    try:
        return Path(path).resolve()
    except RuntimeError:  # Python 3.11 reports a loop as RuntimeError("Symlink loop from ...")
        raise error(f"{what} {printable(path)} is a symlink loop.") from None
    except ValueError:
        raise error(f"{what} {printable(path)} is not a valid path (it holds a NUL byte).") \
            from None
    except OSError as err:
        raise error(f"{what} {printable(path)} cannot be resolved ({err.strerror}).") from None


def file_sha256(path: str | Path, error: type[MosaicError] = CheckpointError) -> str:
    """The sha256 of a file's bytes, as hex, read in 1 MiB pieces."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as stream:
            for chunk in iter(lambda: stream.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as err:
        raise error(f"file {printable(path)} cannot be read ({err.strerror}).") from None
    return digest.hexdigest()


def read_json(path: str | Path, what: str, root: str | Path | None = None,
              error: type[MosaicError] = CheckpointError) -> Any:
    """The JSON value in a regular file of at most :data:`MAX_JSON_BYTES`; callers check its shape."""
    path = regular_file(path, what, root, error)
    try:
        with open(path, "rb") as stream:
            data = stream.read(MAX_JSON_BYTES + 1)
    except OSError as err:
        raise error(f"{what} {printable(path)} cannot be read ({err.strerror}).") from None
    if len(data) > MAX_JSON_BYTES:
        raise error(f"{what} {printable(path)} is larger than {MAX_JSON_BYTES >> 20} MiB, too "
                    f"large for a configuration file.")
    return parse_json(data, f"{what} {printable(path)}", error)


def json_object(value: Any, what: str, path: str | Path,
                error: type[MosaicError] = CheckpointError) -> dict[str, Any]:
    """``value`` when it is a JSON object, else one sentence naming the file."""
    if not isinstance(value, dict):
        raise error(f"{what} {printable(path)} must hold a JSON object, got "
                    f"{json_type(value)}.")
    return value


def short(value: object, limit: int = 60, quote: bool = False) -> str:
    """Text of a value read from a file, safe to print and cut to ``limit`` characters; strings
    are quoted only with ``quote`` (tensor names read better bare, config values quoted)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"a {value.bit_length()}-bit integer"
    text = printable(value) if isinstance(value, str) and not quote else repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def printable(value: object) -> str:
    """``str(value)`` with every character a terminal would act on (newlines, ANSI escapes, bidi
    overrides: whatever ``str.isprintable`` refuses, space excepted) written as its escape, so a
    name read from a file cannot forge lines or colours in a message."""
    text = str(value)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)
