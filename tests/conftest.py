"""Shared fixtures. Triton runs through its interpreter when there is no GPU; the variable must be
set before anything imports triton, hence here, at collection start."""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import json
from pathlib import Path

import pytest
from hypothesis import settings
from safetensors.torch import load_file

# Shared CI machines are noisy: timing-based deadlines would make property tests flaky.
settings.register_profile("default", deadline=None, max_examples=30)
settings.load_profile("default")

from mosaic_encoder.bundled import WEIGHTS_DIR

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
# The bundled checkpoints where the package under test finds them (repository or installed wheel).
WEIGHTS = WEIGHTS_DIR
CHECKPOINTS = ("mosaic-tiny", "mosaic-tiny-mlm")
CASES = ("texts", "random0", "random1")


@pytest.fixture(scope="session")
def texts() -> list[str]:
    return json.loads((DATA / "expected" / "texts.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def expected():
    """expected(name) -> {key: tensor} of the reference outputs of checkpoint ``name``."""
    cache = {}

    def get(name: str) -> dict[str, torch.Tensor]:
        if name not in cache:
            cache[name] = load_file(DATA / "expected" / f"{name}.safetensors")
        return cache[name]

    return get
