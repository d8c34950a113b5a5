"""Fixtures of the training tests: small data files and a dropout-free copy of the tiny model."""

import json
import shutil
from pathlib import Path

import pytest

WEIGHTS = Path(__file__).resolve().parent.parent.parent / "weights"
TINY = WEIGHTS / "mosaic-tiny"


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def pairs(count: int, prefix: str = "", negatives: bool = False) -> list[dict]:
    """Distinct short texts; anchor i and positive i share a topic word."""
    words = ["river", "engine", "violin", "harbor", "garden", "planet", "castle", "market",
             "winter", "forest", "bridge", "letter", "circle", "mirror", "island", "signal"]
    rows = []
    for i in range(count):
        word = words[i % len(words)]
        row = {"anchor": f"{prefix}a question about the {word} number {i}",
               "positive": f"{prefix}an answer on {word} {i}, with details"}
        if negatives:
            row["negative"] = f"{prefix}an unrelated remark {i} about {words[(i + 5) % 16]}"
        rows.append(row)
    return rows


@pytest.fixture(scope="session")
def tiny_no_dropout(tmp_path_factory) -> Path:
    """mosaic-tiny with dropout off: runs that split work differently must compute the same."""
    directory = tmp_path_factory.mktemp("tiny-no-dropout") / "model"
    shutil.copytree(TINY, directory)
    config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (directory / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return directory
