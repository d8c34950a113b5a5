"""Helpers shared by several test modules: repository paths and packed attention inputs."""

from __future__ import annotations

from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
WEIGHTS = ROOT / "weights"
CHECKPOINTS = ("mosaic-tiny", "mosaic-tiny-mlm")
CASES = ("texts", "random0", "random1")


def cu_seqlens_of(lengths, device="cpu") -> torch.Tensor:
    """(B + 1,) int32 sequence starts of a packed batch of sequences of ``lengths`` tokens."""
    return torch.tensor([0, *lengths], dtype=torch.int64, device=device).cumsum(0).to(torch.int32)


def packed_qkv(lengths, heads, head_dim, dtype=torch.float32, seed=0):
    """Standard-normal packed q, k, v (T, heads, head_dim) and their cu_seqlens."""
    generator = torch.Generator().manual_seed(seed)
    qkv = torch.randn(sum(lengths), 3, heads, head_dim, generator=generator).to(dtype)
    return (*qkv.unbind(1), cu_seqlens_of(lengths))
