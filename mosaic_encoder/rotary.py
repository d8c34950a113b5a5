"""Rotary position embeddings (RoPE, Su et al. 2021) for packed tokens.

Each head's query and key features are rotated by angles proportional to the token's position
within its sequence, so the score ``q_i . k_j`` of the rotated vectors depends on positions only
through ``i - j``. The layout is the *rotate-half* convention (GPT-NeoX, Hugging Face's Llama and
ModernBERT): the head's d features are split in halves ``x = [x1 | x2]``, and feature ``m`` of
each half form the pair rotated by ``angle = p * theta^(-2m / d)`` at position ``p``::

    rope(x)[m]         = x1[m] cos(angle) - x2[m] sin(angle)
    rope(x)[m + d / 2] = x2[m] cos(angle) + x1[m] sin(angle)        m = 0 .. d/2 - 1

(The original paper rotates adjacent pairs ``(x[2m], x[2m + 1])`` instead; the two conventions
are a fixed permutation of the features apart, so weights trained in one do not run in the
other.) Angles, cosines, sines and the rotation are computed in float32 for every input dtype.
"""

from __future__ import annotations

import torch


def rotary_tables(positions: torch.Tensor, head_dim: int, theta: float
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosines and sines of the rotation angles of ``positions``.

    Args:
        positions: (T,) integer positions within each token's sequence.
        head_dim: d, even.
        theta: the base of the frequencies ``theta^(-2m / d)`` (``rope_theta``).
    Returns:
        cos, sin: (T, d / 2) float32 on the positions' device.
    """
    exponents = torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32)
    frequencies = torch.pow(theta, -exponents / head_dim)
    angles = positions.to(torch.float32)[:, None] * frequencies[None, :]
    return torch.cos(angles), torch.sin(angles)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """``rope(x)`` for every head: x (T, heads, d) of any float dtype, cos and sin (T, d / 2)
    float32 from :func:`rotary_tables` -> (T, heads, d) in x's dtype."""
    first, second = x.to(torch.float32).chunk(2, dim=-1)
    cos, sin = cos[:, None, :], sin[:, None, :]
    return torch.cat([first * cos - second * sin, second * cos + first * sin], dim=-1).to(x.dtype)
