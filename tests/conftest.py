"""Session set-up. Triton runs through its interpreter when there is no GPU; the variable must be
set before anything imports triton, hence here, at collection start. Helpers shared by test
modules live in helpers.py, not here."""

import json
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest
from hypothesis import settings
from safetensors.torch import load_file

from helpers import DATA

# Timing deadlines would make property tests flaky on shared machines. Under CI (CI set, as
# GitHub and GitLab do) every run draws the same examples: a failure there is a property of the
# code, never of the draw. Local runs explore new random examples each time (and accept
# --hypothesis-seed to replay one).
settings.register_profile("ci", deadline=None, max_examples=30, derandomize=True,
                          print_blob=True)
settings.register_profile("random", deadline=None, max_examples=30)
settings.load_profile("ci" if os.environ.get("CI", "").lower() in ("1", "true", "yes")
                      else "random")


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


@pytest.fixture
def fresh_dynamo():
    """Dynamo's caches and counters empty before and after the test (tests of torch.compile)."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()
