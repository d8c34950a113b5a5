"""Random-number state of one process: saved with a checkpoint, replayed by the gradient cache.

Dropout draws from the CPU generator on CPU and from the device's generator on CUDA, so both are
part of the state.
"""

from __future__ import annotations

import torch

SEED_LIMIT = 2 ** 63  # seeds are signed 64-bit integers in torch's generators


def rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    """The generator states that dropout on ``device`` draws from (uint8 CPU tensors)."""
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, torch.Tensor], device: torch.device) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


def derived_seed(seed: int, *parts: int) -> int:
    """A seed for one purpose (an epoch's shuffle, a rank's dropout) from the run's ``seed``.

    Reduced modulo 2**63, so every seed the settings accept gives a valid generator seed.
    """
    for part in parts:
        seed = seed * 1_000_003 + part
    return seed % SEED_LIMIT
