"""Exact ALiBi windowing: the keys whose softmax weight is provably exactly zero in float32.

With ALiBi, head ``h`` adds ``-slope_h * |i - j|`` to the score of query ``i`` and key ``j``.
For a steep slope the weight of a far key, ``exp2(s2_ij - m_i)`` in the base-2 units of the
kernels (``m_i`` the row max, or the log-sum-exp ``lse2_i >= m_i`` in the backward), is below
the smallest float32 subnormal and rounds to 0: the key contributes nothing to the output nor
to any gradient, and its block of work can be skipped. A rule on ``slope * distance`` alone is
wrong: a far key with a large dot product can dominate the row. The bound below holds for any
inputs.

Bound (base 2; ``c = |scale| * log2(e)``, ``a = slope * log2(e)``, ``d = |i - j|``)::

    s2_ij = scale log2(e) q_i.k_j - a d  <=  c |q_i| K - a d          K = max_j |k_j| (head)
    m_i  >=  s2_ii = scale log2(e) q_i.k_i                            (bias 0: the query's own key,
                                                                       always visited)
    s2_ij - m_i  <=  gap_i - a d,   gap_i = c |q_i| K - scale log2(e) q_i.k_i

``exp2(x)`` is exactly 0 in float32 for ``x < -150`` (and below -126 with flush-to-zero, as
GPUs compute it); ``UNDERFLOW = 152`` leaves a margin for an approximate ``exp2``. The
kernels' scores are rounded: products in TF32 (relative error 2^-11 per operand) or float32
sums over at most 128 lanes, so every score is within ``2^-10 c |q_i| |k_j|`` of its exact
value; ``err_i = 2^-7 c |q_i| (K + |k_i|) + 1 + 2^-14 a`` covers the far score, the diagonal
score and the rounding of the bias, with room to spare. A key is skipped only when

    a d (1 - 2^-20)  >  gap_i + err_i + UNDERFLOW,

that is when ``d`` exceeds the query's *reach* ``R_i = (gap_i + err_i + UNDERFLOW) / (a (1 -
2^-20))``, stored rounded up (``floor(R_i (1 + 2^-16)) + 1``) as int32 of shape (heads,
tokens).

The linear bias. Off the diagonal the kernels add a row term and a column term instead of
``a |i - j|`` (``flash_attn._bias_terms``), which rounds to within ``2^-22 a (d + 256)`` of the
exact bias, against ``2^-24 a d`` for one rounded multiply. The bound absorbs the difference:

    2^-22 a (d + 256)  =  2^-22 a d  +  2^-14 a
    2^-22 a d  <=  2^-20 a d / 4     (inside the factor 1 - 2^-20: a d (1 - 2^-20) leaves 2^-20 a d)
    2^-14 a                           (the last term of err_i)

so the skip condition still implies a computed weight of exactly 0. (The term costs a reach of
``2^-14`` token more.) Zero or negative slopes, non-finite norms and heads whose values ``v`` hold a
non-finite number (``0 * inf`` is NaN, so such a key is not inert) get
:data:`UNBOUNDED`: nothing is skipped.

Tiles. The kernels work on blocks of ``block_m`` queries and ``block_n`` keys of one sequence.
A query block takes the largest reach ``Rb`` of its rows and visits the key blocks that meet the
token range ``[start_m - Rb, start_m + block_m + Rb)`` (clipped to the sequence): a key outside
it is farther than ``Rb`` from every query of the block. :func:`visited_key_blocks` is that rule
in plain PyTorch; the forward and dQ kernels implement it. The dK/dV kernel visits, for each
key block, the query blocks from the first to the last query ``i`` whose reach covers one of its
keys ``j`` (``|i - j| <= R_i``): a pre-pass (``flash_attn.query_spans``) finds, once per head for
every granule of :data:`SPAN_GRANULE` keys, the granules of :data:`SPAN_GRANULE` queries holding
those two queries, and :func:`visited_query_blocks` is the same rule in plain PyTorch (exact for
block sizes that are multiples of the granule, as every shipped one is).
"""

from __future__ import annotations

import functools
import math

import torch

__all__ = ["SPAN_GRANULE", "UNBOUNDED", "executed_forward_flops", "key_reach", "min_paying_length",
           "visited_key_blocks", "visited_query_blocks", "window_pays"]

UNBOUNDED = 1 << 30  # a reach that skips nothing; start + block + UNBOUNDED still fits in int32
SPAN_GRANULE = 16  # keys per query span of the dK/dV kernel; every block size is a multiple
# The margins of the bound, shared with the kernels' pre-pass (flash_attn._reach_kernel).
UNDERFLOW = 152.0
SCORE_ERROR = 2.0 ** -7  # err_i's factor
RATE_MARGIN = 1.0 - 2.0 ** -20
LINEAR_BIAS_ERROR = 2.0 ** -14  # err_i's term in the base-2 slope a (the linear bias)
ROUND_UP = 1.0 + 2.0 ** -16
_LOG2E = 1.0 / math.log(2.0)


def key_reach(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, alibi_slopes: torch.Tensor,
              softmax_scale: float) -> torch.Tensor:
    """Per-query reach: keys farther than it have exactly zero weight.

    Args:
        q, k, v: (tokens, heads, head_dim), any float dtype, one device.
        alibi_slopes: (heads,) float32.
        softmax_scale: the scale applied to ``q.k`` before the bias.
    Returns:
        (heads, tokens) int32 contiguous, values in ``[1, UNBOUNDED]``. Computed with tensor
        operations only (no value is read back to the host).
    """
    heads = q.shape[1]
    qf, kf = q.float(), k.float()
    q_norm = torch.linalg.vector_norm(qf, dim=-1)  # (T, H)
    k_norm = torch.linalg.vector_norm(kf, dim=-1)
    k_max = k_norm.amax(dim=0) if k.shape[0] else torch.zeros(heads, device=k.device)
    diag = (qf * kf).sum(-1)
    c = abs(softmax_scale) * _LOG2E
    gap = c * q_norm * k_max - (softmax_scale * _LOG2E) * diag
    slopes2 = alibi_slopes.float() * _LOG2E
    err = SCORE_ERROR * c * q_norm * (k_max + k_norm) + 1.0 + LINEAR_BIAS_ERROR * slopes2
    rate = slopes2 * RATE_MARGIN
    reach = (gap + err + UNDERFLOW) / rate * ROUND_UP + 1.0
    v_finite = torch.isfinite(v).flatten(2).all(dim=2).all(dim=0) if v.shape[0] else \
        torch.ones(heads, dtype=torch.bool, device=v.device)
    bounded = torch.isfinite(reach) & (rate > 0) & v_finite
    reach = torch.where(bounded, reach.clamp(max=UNBOUNDED), UNBOUNDED).floor()
    return reach.to(torch.int32).t().contiguous()


# The cost model of the automatic switch, in units of one visited 128 x 128 forward tile (the
# largest shipped tiles; the ratios below do not depend on head_dim, which scales both sides).
# - A tile is 4 * 128 * 128 * d FLOPs on tensor cores: 4.2 MFLOP at d 64, about 10.5 ns of an
#   H200 at 400 TFLOP/s.
# - The pre-pass reads the q, k and v rows of a (query block, head) once, k twice: 4 * 128 * d
#   elements, 64 KB in bf16 at d 64, about 13.7 ns at 4.8 TB/s, so 1.3 tiles; with the tails of
#   its two small launches we count _PREPASS_TILES = 2 per (query block, head). The backward's
#   span pre-pass (flash_attn.query_spans) is not counted: it compares (L / 16)^2 granule pairs a
#   head, 663 sm_90 instructions a thread per 64 x 64 of them (the compile report), which on
#   paper is about 10 us at 1 x 16384 with 12 heads, around 1 % of the windowed backward.
# - The best a sequence can save is what it saves when the gap term of every query is 0 (the
#   smallest reach any input gives, 152 / (slope log2 e)), with ALiBi's geometric slopes
#   2^(-8 (h + 1) / heads), counted in the forward alone (the backward reuses the reach for free).
# Windowing pays for a sequence only when those saved tiles exceed the pre-pass; a batch whose
# longest sequence is shorter than that cannot pay for any input. At 12 heads that length is
# 1664 tokens: 64 x 512 runs unwindowed, 1 x 4096 windowed.
_TILE = 128
_PREPASS_TILES = 2


def _best_case_saved_tiles(length: int, heads: int) -> int:
    """Forward tiles of ``_TILE`` x ``_TILE`` skipped in one sequence at the smallest reach.

    Query block ``m`` of ``n`` visits key blocks ``[max(m - w, 0), min(m + 1 + w, n))`` with ``w =
    ceil(reach / _TILE)``; the sums below are those ranges' lengths added over ``m``.
    """
    n = -(-length // _TILE)
    saved = 0
    for head in range(heads):
        slope = 2.0 ** (-8.0 * (head + 1) / heads)
        w = -(-(math.floor((UNDERFLOW + 1.0) / (slope * _LOG2E)) + 1) // _TILE)
        inner = max(0, n - w)  # blocks whose range ends before the sequence does
        ends = inner * (inner + 1) // 2 + inner * w + (n - inner) * n
        tail = max(0, n - 1 - w)
        starts = tail * (tail + 1) // 2
        saved += n * n - (ends - starts)
    return saved


@functools.lru_cache(maxsize=None)
def min_paying_length(heads: int) -> int:
    """The shortest sequence (a multiple of 128 tokens) whose best-case saving exceeds the cost of
    the windowing pre-pass, for ``heads`` heads with ALiBi's geometric slopes (see the cost model
    above). Pure Python, memoised per head count: the forward calls it on every launch."""
    lo, hi = 1, 1 << 12  # in tiles: 128 tokens .. 512 Ki tokens
    while lo < hi:  # the saving grows with the square of the length, the cost linearly
        mid = (lo + hi) // 2
        if _best_case_saved_tiles(mid * _TILE, heads) > _PREPASS_TILES * heads * mid:
            hi = mid
        else:
            lo = mid + 1
    return lo * _TILE


def window_pays(max_seqlen: int, heads: int) -> bool:
    """Whether a batch whose longest sequence has ``max_seqlen`` tokens can gain from windowing
    (:func:`min_paying_length`); decided from shapes only, without reading a tensor."""
    return max_seqlen >= min_paying_length(heads)


def _block_reach(reach: torch.Tensor, start: int, length: int, block_m: int) -> torch.Tensor:
    """(heads, blocks) int64: the largest reach of each query block of one sequence."""
    seq = reach[:, start:start + length].to(torch.int64)
    pad = (-length) % block_m
    seq = torch.nn.functional.pad(seq, (0, pad))
    return seq.view(reach.shape[0], -1, block_m).amax(dim=2)


def _key_ranges(block_reach: torch.Tensor, length: int, block_m: int, block_n: int):
    """(first, end) key-block indices visited by each query block, each (heads, blocks)."""
    starts = torch.arange(block_reach.shape[1], dtype=torch.int64) * block_m
    lo = (starts - block_reach).clamp(min=0)
    hi = (starts + block_m + block_reach).clamp(max=length)
    return lo // block_n, (hi + block_n - 1) // block_n


def _sequences(reach: torch.Tensor | None, cu_seqlens: torch.Tensor):
    """Per non-empty sequence: ``(start, length, reach)``, ``reach`` a CPU copy of all the
    reaches or None. Reads ``cu_seqlens`` (a host copy)."""
    bounds = cu_seqlens.tolist()
    reach = None if reach is None else reach.cpu()
    for start, end in zip(bounds[:-1], bounds[1:]):
        if end > start:
            yield start, end - start, reach


def _sequence_ranges(reach: torch.Tensor | None, cu_seqlens: torch.Tensor, block_m: int,
                     block_n: int):
    """Per non-empty sequence: ``(length, ranges)``, ``ranges`` the (first, end) key blocks of
    :func:`_key_ranges` or None without windowing."""
    for start, length, reach in _sequences(reach, cu_seqlens):
        yield length, None if reach is None else _key_ranges(
            _block_reach(reach, start, length, block_m), length, block_m, block_n)


def visited_key_blocks(reach: torch.Tensor | None, cu_seqlens: torch.Tensor, heads: int,
                       block_m: int, block_n: int) -> int:
    """Tiles the forward (and, with its own block sizes, the dQ kernel) visits.

    Args:
        reach: (heads, tokens) int32 from :func:`key_reach`, or None for no windowing.
        cu_seqlens: (batch + 1,) int32 sequence offsets.
    Returns:
        the number of (head, query block, key block) tiles computed; a CPU-side count, for tests
        and FLOP accounting (it reads the tensors' values).
    """
    total = 0
    for length, ranges in _sequence_ranges(reach, cu_seqlens, block_m, block_n):
        if ranges is None:
            total += heads * math.ceil(length / block_m) * math.ceil(length / block_n)
        else:
            first, end_block = ranges
            total += int((end_block - first).sum())
    return total


def query_span_ends(reach: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For one sequence: per key ``j``, the first and the last query ``i`` with ``|i - j| <=
    R_i`` (the only queries that may weigh it).

    Args:
        reach: (heads, length) reaches of the sequence's queries.
    Returns:
        ``(first, last)``, each (heads, length) int64. The first is where the running maximum of
        ``i + R_i`` reaches ``j``, the last where the running minimum of ``i - R_i`` from the end
        still lies at or below ``j``; both never pass ``j`` (a query reaches itself).
    """
    pos = torch.arange(length, dtype=torch.int64, device=reach.device)
    reach = reach.to(torch.int64)
    right = (pos + reach).cummax(dim=1).values.contiguous()
    left = (pos - reach).flip(1).cummin(dim=1).values.flip(1).contiguous()
    keys = pos.expand(reach.shape[0], length).contiguous()
    first = torch.searchsorted(right, keys)
    last = torch.searchsorted(left, keys, right=True) - 1
    return first, last


def visited_query_blocks(reach: torch.Tensor | None, cu_seqlens: torch.Tensor, heads: int,
                         block_m: int, block_n: int) -> int:
    """Tiles the dK/dV kernel visits: per key block, the query blocks from the one holding the
    first query that may weigh one of its keys to the one holding the last
    (:func:`query_span_ends` of its first and last key). The kernel's count when ``block_m`` and
    ``block_n`` are multiples of :data:`SPAN_GRANULE`, as every shipped block size is."""
    total = 0
    for start, length, reach in _sequences(reach, cu_seqlens):
        n_q, n_k = math.ceil(length / block_m), math.ceil(length / block_n)
        if reach is None:
            total += heads * n_q * n_k
            continue
        first, last = query_span_ends(reach[:, start:start + length], length)
        key_first = torch.arange(n_k) * block_n
        key_last = (key_first + block_n).clamp(max=length) - 1
        total += int((last[:, key_last] // block_m - first[:, key_first] // block_m + 1).sum())
    return total


def executed_forward_flops(reach: torch.Tensor | None, cu_seqlens: torch.Tensor, heads: int,
                           head_dim: int, block_m: int, block_n: int) -> int:
    """FLOPs the forward executes: ``4 * head_dim`` per (query, key) pair of a visited tile
    inside the sequence, the convention of ``flops.attention_flops`` (which credits every pair
    of a sequence). Credited / executed is the work windowing saved.
    """
    pairs = 0
    for length, ranges in _sequence_ranges(reach, cu_seqlens, block_m, block_n):
        if ranges is None:
            pairs += heads * length * length
            continue
        first, end_block = ranges
        rows = (length - torch.arange(first.shape[1]) * block_m).clamp(max=block_m)
        keys = (end_block * block_n).clamp(max=length) - first * block_n
        pairs += int((rows * keys).sum())
    return 4 * head_dim * pairs
