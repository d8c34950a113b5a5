"""ALiBi: per-head linear distance penalties added to attention scores (Press et al., 2022).

For query position i and key position j of the same sequence, head h adds ``-s_h * |i - j|``
after the ``1/sqrt(d)`` scale. The bias is symmetric (the encoder is bidirectional) and depends
only on distances, so it is generated for whatever positions are needed instead of being stored
at a maximum length.
"""

from __future__ import annotations

import math

import torch


def _power_of_two_slopes(n: int) -> list[float]:
    # s_h = 2^(-8 (h+1) / n): a geometric sequence from 2^(-8/n) down to 2^-8.
    return [2.0 ** (-8.0 * (h + 1) / n) for h in range(n)]


def alibi_slopes(num_heads: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Slopes in head order, float32 of shape (num_heads,).

    For a power-of-two head count n the slopes are ``2^(-8(h+1)/n)``. Otherwise the list for the
    largest power of two c below n is extended with every other slope of the list for 2c
    (indices 0, 2, 4, ...), which interleaves between the existing ones.
    """
    if isinstance(num_heads, bool) or not isinstance(num_heads, int) or num_heads < 1:
        raise ValueError(f"num_heads must be a positive integer, got {num_heads!r}.")
    closest = 2 ** int(math.floor(math.log2(num_heads)))
    slopes = _power_of_two_slopes(closest)
    slopes += _power_of_two_slopes(2 * closest)[0::2][: num_heads - closest]
    return torch.tensor(slopes, dtype=torch.float32, device=device)


def alibi_bias(slopes: torch.Tensor, query_positions: torch.Tensor,
               key_positions: torch.Tensor) -> torch.Tensor:
    """ALiBi bias ``-s_h * |i - j|``, float32 of shape (heads, Lq, Lk).

    Args:
        slopes: (heads,) float32.
        query_positions: (Lq,) integer positions within one sequence.
        key_positions: (Lk,) integer positions within the same sequence.
    """
    distance = (query_positions[:, None] - key_positions[None, :]).abs().to(torch.float32)
    return -slopes.to(torch.float32)[:, None, None] * distance


def alibi_offset_table(slopes: torch.Tensor, length: int) -> torch.Tensor:
    """``table[h, t] = -s_h * |t - (length - 1)|``: the bias of every offset, (heads, 2L - 1).

    Every (query, key) bias of a sequence of ``length`` tokens is an entry of this table, since
    the bias depends only on ``j - i``; :func:`alibi_bias_view` reads blocks out of it.
    """
    offsets = torch.arange(2 * length - 1, device=slopes.device) - (length - 1)
    return -slopes.to(torch.float32)[:, None] * offsets.abs().to(torch.float32)


def alibi_bias_view(table: torch.Tensor, length: int, first_row: int, rows: int) -> torch.Tensor:
    """Bias of query rows ``first_row + rows - 1`` down to ``first_row`` (descending) against all
    ``length`` keys: a (heads, rows, length) view of ``table``, no memory of its own.

    With rows in descending order, entry (r', j) reads ``table[j + r' + length - first_row -
    rows]``: both strides are +1, so the view is a plain ``as_strided`` (ascending rows would
    need a stride of -1, which torch does not allow). Callers flip their query block to match.
    """
    heads, width = table.shape
    return table.as_strided((heads, rows, length), (width, 1, 1),
                            table.storage_offset() + length - first_row - rows)
