"""A hostile user at the command line: one attack per finding family of issue 19 (and the
promises that held), each through the real entry point in a fresh interpreter.

Every attack must end in exit code 1 (or 2, a usage error), with stderr one sentence and no
traceback, nothing on stdout, the working directory (where outputs go) exactly as it was, and
the attack's files untouched. A run past its timeout is a hang and fails. The attacks run
concurrently; each builds its files first (``make``) in its own directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
import torch

from helpers import WEIGHTS, copy_checkpoint

TIMEOUT_S = 300  # longer than any attack takes on a loaded 2-core machine; a hang never ends


@dataclass(frozen=True)
class Attack:
    """``mosaic-encoder ARGS`` run in an empty working directory; ``{files}`` in an argument is
    the directory ``make`` filled."""

    family: str
    args: list[str]
    message: str
    make: Callable[[Path], None] = lambda files: None
    stdin: bytes = b""
    env: dict[str, str] = field(default_factory=dict)


def overflowing_mlm(files: Path) -> None:
    """A masked-LM checkpoint with finite weights whose activations overflow float32."""
    def overflow(state):
        weight = state["bert.embeddings.LayerNorm.weight"]
        state["bert.embeddings.LayerNorm.weight"] = torch.full_like(weight, 1e38)

    copy_checkpoint(files, "mosaic-tiny-mlm", "mlm", tensors=overflow)


def panicking_tokenizer(files: Path) -> None:
    """A checkpoint whose tokenizer's regex backtracks past Oniguruma's limit: a Rust panic."""
    directory = copy_checkpoint(files, "mosaic-tiny", "ckpt")
    config = json.loads((directory / "tokenizer.json").read_text(encoding="utf-8"))
    config["pre_tokenizer"] = {"type": "Split", "pattern": {"Regex": "(a+)+$"},
                               "behavior": "Isolated", "invert": False}
    (directory / "tokenizer.json").write_text(json.dumps(config), encoding="utf-8")


class _Payload:
    """Unpickling this would run ``touch files/pwned``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def pickle_with_code(files: Path) -> None:
    with (files / "pytorch_model.bin").open("wb") as stream:
        pickle.dump({"embeddings.word_embeddings.weight": _Payload(files / "pwned")}, stream)


def deep_json_lines(files: Path) -> None:
    """One JSON line nested 100,000 deep: a RecursionError for an unbounded reader."""
    (files / "deep.jsonl").write_text("[" * 100_000 + "]" * 100_000 + "\n")


def huge_integer_pairs(files: Path) -> None:
    """Training pairs with a 5,000-digit integer: a ValueError for an unbounded reader."""
    row = '{"anchor": "a", "positive": "b", "n": ' + "9" * 5000 + "}\n"
    (files / "pairs.jsonl").write_text(row)


def fifo_corpus(files: Path) -> None:
    """A FIFO nobody writes to: opening it for reading would wait forever."""
    os.mkfifo(files / "corpus.jsonl")


def overflowing_encoder_and_corpus(files: Path) -> None:
    """The overflowing weights of :func:`overflowing_mlm` in a sentence encoder, and a corpus."""
    def overflow(state):
        state["embeddings.LayerNorm.weight"] = torch.full_like(state["embeddings.LayerNorm.weight"],
                                                               1e38)

    copy_checkpoint(files, "mosaic-tiny", "ckpt", tensors=overflow)
    (files / "corpus.jsonl").write_text('{"id": 1, "text": "a"}\n{"id": 2, "text": "b"}\n')


def corpus_with_huge_id(files: Path) -> None:
    (files / "corpus.jsonl").write_text('{"id": 1, "text": "a"}\n{"id": %d, "text": "b"}\n'
                                        % 2 ** 70)


def self_symlinked_config(files: Path) -> None:
    directory = copy_checkpoint(files, "mosaic-tiny", "ckpt")
    (directory / "config.json").unlink()
    (directory / "config.json").symlink_to("config.json")


def training_pairs(files: Path) -> None:
    (files / "pairs.jsonl").write_text('{"anchor": "a", "positive": "b"}\n' * 4)


TRAIN = ["train", "--model", str(WEIGHTS / "mosaic-tiny"), "--data", "{files}/pairs.jsonl",
         "--output", "run", "--steps", "1", "--batch-size", "2", "--no-progress"]

ATTACKS = [
    Attack("non-finite output", ["fill-mask", "a [MASK]", "--json", "--model", "{files}/mlm"],
           "are not finite", overflowing_mlm),
    Attack("spoofed messages", ["encode", "a" * 40 + "b", "--model", "{files}/ckpt"],
           "failed on the input", panicking_tokenizer, env={"RUST_BACKTRACE": "full"}),
    Attack("bounded readers", ["encode", "--input", "{files}/deep.jsonl"],
           "nests JSON values too deeply", deep_json_lines),
    Attack("bounded readers", ["train", "--model", str(WEIGHTS / "mosaic-tiny"), "--data",
                               "{files}/pairs.jsonl", "--output", "run"],
           "holds a number too large to read", huge_integer_pairs),
    Attack("bounded readers", ["embed-corpus", "{files}/corpus.jsonl", "out", "--model",
                               str(WEIGHTS / "mosaic-tiny")], "is not a regular file", fifo_corpus),
    Attack("non-finite output", ["embed-corpus", "{files}/corpus.jsonl", "out", "--model",
                                 "{files}/ckpt"], "are not finite", overflowing_encoder_and_corpus),
    Attack("non-finite training", TRAIN + ["--lr", "inf"], "learning_rate = inf is out of range",
           training_pairs),
    Attack("refused before work", ["embed-corpus", "{files}/corpus.jsonl", "out", "--model",
                                   str(WEIGHTS / "mosaic-tiny")],
           "outside the 64-bit range", corpus_with_huge_id),
    Attack("remaining tracebacks", ["encode", "x", "--model", "{files}/ckpt"],
           "is a symlink loop", self_symlinked_config),
    Attack("remaining tracebacks", TRAIN + ["--seed", str(2 ** 64)], "is out of range",
           training_pairs),
    Attack("remaining tracebacks", ["embed-corpus", "{files}/corpus.jsonl", "out", "--model",
                                    str(WEIGHTS / "mosaic-tiny"), "--engine", "ray",
                                    "--gpus-per-worker", "nan"],
           "--gpus-per-worker must be a finite number", corpus_with_huge_id),
    Attack("held: pickled code never runs", ["convert", "{files}/pytorch_model.bin", "--output",
                                             "out.safetensors"],
           "refused", pickle_with_code),
    Attack("held: outputs never overwrite the model", [
        "encode", "x", "--model", str(WEIGHTS / "mosaic-tiny"), "--output",
        str(WEIGHTS / "mosaic-tiny" / "model.safetensors"), "--force"],
           "inside the model directory"),
]


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).digest()
            if p.is_file() else b"" for p in sorted(directory.rglob("*"))}


def _run(number: int, attack: Attack, base: Path):
    files, cwd = base / f"attack{number}" / "files", base / f"attack{number}" / "cwd"
    files.mkdir(parents=True)
    cwd.mkdir()
    attack.make(files)
    before = _snapshot(files), _snapshot(WEIGHTS)
    env = dict(os.environ, PYTHONIOENCODING="utf-8", **attack.env)
    try:
        result = subprocess.run([sys.executable, "-m", "mosaic_encoder.cli",
                                 *(a.format(files=files) for a in attack.args)],
                                input=attack.stdin, capture_output=True, env=env, cwd=cwd,
                                timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        result = None
    return result, before, (_snapshot(files), _snapshot(WEIGHTS)), sorted(os.listdir(cwd))


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    base = tmp_path_factory.mktemp("attacks")
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(lambda pair: _run(*pair, base), enumerate(ATTACKS)))


@pytest.mark.parametrize("number", range(len(ATTACKS)),
                         ids=[f"{a.family}: {' '.join(a.args[:1])}" for a in ATTACKS])
def test_attack_is_refused_with_one_sentence(outcomes, number):
    attack = ATTACKS[number]
    result, before, after, left = outcomes[number]
    assert result is not None, f"hang: no answer within {TIMEOUT_S} s"
    stderr = result.stderr.decode("utf-8", "replace")
    assert "Traceback" not in stderr, stderr
    assert result.returncode in (1, 2), stderr
    assert result.stdout == b"", result.stdout[:200]
    lines = stderr.strip().splitlines()
    if result.returncode == 2:  # argparse: its usage block, then the one sentence
        assert lines[0].startswith("usage:"), stderr
        lines = lines[-1:]
    assert len(lines) == 1 and attack.message in lines[0], stderr
    assert left == [], f"left behind: {left}"
    assert after == before, "an input file or a bundled checkpoint changed"
