"""Fixtures of the training tests: a dropout-free copy of the tiny model."""

import json
import shutil
from pathlib import Path

import pytest

from helpers import TINY


@pytest.fixture(scope="session")
def tiny_no_dropout(tmp_path_factory) -> Path:
    """mosaic-tiny with dropout off: runs that split work differently must compute the same."""
    directory = tmp_path_factory.mktemp("tiny-no-dropout") / "model"
    shutil.copytree(TINY, directory)
    config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (directory / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return directory
