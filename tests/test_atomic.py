"""Atomic writes: the umask's permissions, and nothing left behind by SIGTERM."""

import os
import signal
import subprocess
import sys
import time

import pytest

from helpers import leftovers
from mosaic_encoder import cli
from mosaic_encoder.atomic import atomic_write

# The child signals readiness by creating a marker, then blocks mid-write until killed.
CHILD = """
import sys, time
from pathlib import Path
from mosaic_encoder.atomic import atomic_write

def write(stream):
    stream.write(b"half a file")
    stream.flush()
    Path(sys.argv[2]).touch()
    time.sleep(600)

atomic_write(sys.argv[1], write)
"""


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_files_get_the_umask_permissions(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        atomic_write(tmp_path / "out.bin", lambda stream: stream.write(b"data"))
    finally:
        os.umask(previous)
    assert (tmp_path / "out.bin").read_bytes() == b"data"
    assert (tmp_path / "out.bin").stat().st_mode & 0o777 == mode


def test_cli_outputs_are_not_private(tmp_path, capsys):
    previous = os.umask(0o022)
    try:
        assert cli.main(["encode", "hello", "--output", str(tmp_path / "e.npy")]) == 0
    finally:
        os.umask(previous)
    assert (tmp_path / "e.npy").stat().st_mode & 0o777 == 0o644


def test_sigterm_during_a_write_leaves_no_file(tmp_path):
    target, ready = tmp_path / "out.bin", tmp_path / "ready"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(target), str(ready)])
    try:
        while not ready.exists():
            assert child.poll() is None, "the writer exited before it began writing"
            time.sleep(0.05)
        assert leftovers(tmp_path) != []  # the temporary file exists mid-write
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        if child.poll() is None:
            child.kill()
    assert not target.exists() and leftovers(tmp_path) == []


def test_an_existing_file_survives_an_interrupted_write(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")

    def fail(stream):
        stream.write(b"new")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, fail)
    assert target.read_bytes() == b"old" and leftovers(tmp_path) == []


def test_atomic_directory_appears_whole_or_not_at_all(tmp_path):
    from mosaic_encoder.atomic import atomic_directory

    target = tmp_path / "model"
    with pytest.raises(RuntimeError):
        with atomic_directory(target) as temporary:
            (temporary / "half.bin").write_bytes(b"x")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    target.mkdir()  # an empty directory is replaced
    with atomic_directory(target) as temporary:
        (temporary / "whole.bin").write_bytes(b"x")
    assert [p.name for p in target.iterdir()] == ["whole.bin"]
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
    assert target.stat().st_mode & 0o777 == 0o777 & ~_current_umask()


def _current_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask
