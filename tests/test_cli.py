"""The command line through its real entry point (a subprocess), as a user meets it."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import WEIGHTS
from mosaic_encoder.sentence import SentenceEncoder


def cli(*args, stdin=None):
    env = dict(os.environ, PYTHONIOENCODING="utf-8")
    return subprocess.run([sys.executable, "-m", "mosaic_encoder.cli", *args], input=stdin,
                          capture_output=True, env=env)


def test_encode_default_checkpoint_prints_json_lines():
    result = cli("encode", "hello world", "second text")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.decode().splitlines()]
    assert [r["text"] for r in rows] == ["hello world", "second text"]
    assert b"random-weight" in result.stderr
    expected = SentenceEncoder(WEIGHTS / "mosaic-tiny").encode(["hello world", "second text"])
    np.testing.assert_allclose(np.array([r["embedding"] for r in rows]), expected, atol=1e-6)


def test_encode_stdin_to_npy(tmp_path):
    output = tmp_path / "out.npy"
    result = cli("encode", "--model", str(WEIGHTS / "mosaic-tiny"), "--output", str(output),
                 stdin="one\ntwo\nthree\n".encode())
    assert result.returncode == 0, result.stderr
    assert np.load(output).shape == (3, 192)


@pytest.mark.parametrize("args,stdin,message", [
    (["encode", "--model", "/nonexistent/dir", "x"], None, b"does not exist"),
    (["encode"], b"", b"no input texts"),
    (["encode"], b"\xff\xfe bad", b"not UTF-8"),
    (["encode", "x", "--output", "out.txt"], None, b"must end in .npy or .jsonl"),
])
def test_bad_input_is_one_sentence(args, stdin, message):
    result = cli(*args, stdin=stdin)
    assert result.returncode != 0 and message in result.stderr
    assert b"Traceback" not in result.stderr and result.stdout == b""
