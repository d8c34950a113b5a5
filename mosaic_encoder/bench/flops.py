"""FLOP accounting for benchmarks of bidirectional variable-length attention.

Convention (that of the FlashAttention benchmarks, without causal halving since the encoder is
bidirectional):

* a *real query-key pair* is a query and a key of the same sequence; a packed batch of sequences
  of lengths L_1 .. L_B has ``sum_i L_i**2`` real pairs per head;
* forward: two matrix products per head, ``S = Q K^T`` and ``O = P V``, each 2 * head_dim
  FLOPs per pair: ``4 * head_dim * heads * pairs``;
* backward: 2.5 x forward (five products: recomputing ``S``, ``dV = P^T dO``, ``dP = dO V^T``,
  ``dQ = dS K``, ``dK = dS^T Q``), so forward + backward = 3.5 x forward;
* softmax, scaling, the ALiBi bias and masking are not counted.

Implementations that compute on a padded batch (B sequences padded to the longest) do
``B * max(L)**2`` pairs of work but are credited only the real pairs, so their TFLOP/s is the
useful throughput, comparable across implementations.
"""

from __future__ import annotations

from collections.abc import Sequence

MODES = ("fwd", "fwd+bwd")
BACKWARD_FACTOR = 2.5  # backward FLOPs / forward FLOPs


def real_pairs(seqlens: Sequence[int]) -> int:
    """Query-key pairs within sequences, per head: ``sum(L**2)``."""
    return sum(int(length) ** 2 for length in seqlens)


def padded_pairs(seqlens: Sequence[int]) -> int:
    """Pairs a padded (B, S, S) computation does per head: ``B * max(L)**2``."""
    return len(seqlens) * max(seqlens, default=0) ** 2


def attention_flops(seqlens: Sequence[int], heads: int, head_dim: int, mode: str = "fwd") -> int:
    """FLOPs credited to one attention call over the packed batch ``seqlens``.

    ``mode`` is ``"fwd"`` (``4 * head_dim * heads * real_pairs``) or ``"fwd+bwd"`` (3.5 times
    that). The result is an integer: 4 * d is even, so 3.5 x forward is exact.
    """
    forward = 4 * head_dim * heads * real_pairs(seqlens)
    if mode == "fwd":
        return forward
    if mode == "fwd+bwd":
        return forward + forward * 5 // 2
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")


def tflops(flops: int, seconds: float | None) -> float | None:
    """Achieved TFLOP/s, or None without a time."""
    if not seconds or seconds <= 0:
        return None
    return flops / seconds / 1e12
