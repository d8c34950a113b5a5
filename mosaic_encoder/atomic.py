"""Write a file completely or not at all.

Every output of this package (embeddings, converted checkpoints, benchmark results, training
checkpoints, corpus shards) goes through :func:`atomic_path` (a whole directory, through
:func:`atomic_directory`): the data is written to a temporary name in the target's directory and
renamed over the target only once it is complete. An error, Ctrl-C
or SIGTERM during the write removes the temporary file, so a reader never sees half a file.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import threading
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from .errors import InputError


def _umask() -> int:
    """The process's umask (reading it means setting it, so it is set straight back)."""
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _default_mode() -> int:
    """The permissions a plain ``open(path, "w")`` would give a new file under the current umask."""
    return 0o666 & ~_umask()


@contextlib.contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """Turn SIGTERM into ``SystemExit`` while the body runs, so ``finally`` clauses clean up.

    Python's default SIGTERM action ends the process without unwinding; signal handlers can only be
    installed from the main thread, elsewhere the body runs unchanged.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _exit(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, _exit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success it is renamed onto ``target``.

    The caller writes the whole file to the yielded path (by name, e.g. ``safetensors.save_file``).
    On any exception, KeyboardInterrupt or SIGTERM the temporary file is removed and ``target`` is
    left as it was. The finished file gets the umask's permissions, as a plain ``open`` would.
    OS errors become :class:`InputError` naming ``target``.
    """
    target = Path(target)
    directory = target.parent if str(target.parent) else Path(".")
    with sigterm_as_exit():
        try:
            handle, name = tempfile.mkstemp(dir=directory, prefix=f".{target.name}.", suffix=".tmp")
        except OSError as err:
            raise InputError(f"output path {target} cannot be written ({err.strerror}).") from None
        os.close(handle)
        temporary = Path(name)
        try:
            yield temporary
            os.chmod(temporary, _default_mode())
            os.replace(temporary, target)
        except OSError as err:
            temporary.unlink(missing_ok=True)
            raise InputError(f"output path {target} cannot be written ({err.strerror or err}).") \
                from None
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise


def atomic_write(target: str | Path, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write(stream)`` on a binary stream whose bytes replace ``target`` only if it returns."""
    with atomic_path(target) as temporary, open(temporary, "wb") as stream:
        write(stream)


@contextlib.contextmanager
def atomic_directory(target: str | Path) -> Iterator[Path]:
    """Yield a new temporary directory beside ``target``; on success it is renamed onto
    ``target`` (which must not exist, or be an empty directory).

    On any exception, KeyboardInterrupt or SIGTERM the temporary directory is removed and
    ``target`` is left as it was. The finished directory gets the umask's permissions, as a plain
    ``mkdir`` would. OS errors become :class:`InputError` naming ``target``.
    """
    target = Path(target)
    directory = target.parent if str(target.parent) else Path(".")
    with sigterm_as_exit():
        try:
            temporary = Path(tempfile.mkdtemp(dir=directory, prefix=f".{target.name}.",
                                              suffix=".tmp"))
        except OSError as err:
            raise InputError(f"output directory {target} cannot be written "
                             f"({err.strerror}).") from None
        try:
            yield temporary
            os.chmod(temporary, 0o777 & ~_umask())
            os.replace(temporary, target)
        except OSError as err:
            shutil.rmtree(temporary, ignore_errors=True)
            raise InputError(f"output directory {target} cannot be written "
                             f"({err.strerror or err}).") from None
        except BaseException:
            shutil.rmtree(temporary, ignore_errors=True)
            raise
