"""Variable-length FlashAttention-2 with bidirectional ALiBi, written in Triton.

This is the attention kernel used by MosaicBERT / lodestone-base-4096-v1: every
head ``h`` adds the (symmetric, i.e. non-causal) ALiBi bias

    bias[h, i, j] = -slope[h] * |i - j|

to the scaled scores of query ``i`` and key ``j`` of the *same* sequence.
Sequences are packed along the token axis ("varlen" layout, as produced by
unpadding a padded batch): sequence ``b`` occupies the tokens
``cu_seqlens[b] : cu_seqlens[b + 1]`` and positions restart at 0 inside every
sequence.  Tokens never attend across sequence boundaries.

Math (for one sequence, one head; ``L`` tokens, ``d`` = head_dim)
----------------------------------------------------------------

Forward::

    S = scale * Q K^T + B                 (L x L, B the ALiBi bias above)
    P = softmax(S, dim=-1)
    O = P V

The (L x L) matrices are never materialised.  Queries are processed in blocks
of ``BLOCK_M`` rows, keys/values streamed in blocks of ``BLOCK_N`` rows, and
the softmax is computed online (FlashAttention-2): for each query row we keep
the running maximum ``m``, the running normaliser ``l`` and the un-normalised
accumulator ``acc``.  For a new key block with scores ``s``::

    m_new = max(m, rowmax(s))
    alpha = exp(m - m_new)                # rescales what was accumulated
    p     = exp(s - m_new)
    l     = alpha * l + rowsum(p)
    acc   = alpha * acc + p V_blk
    m     = m_new

and at the end ``O = acc / l``.  Everything is done in base 2, because
``exp2`` is a single hardware instruction: with ``log2(e) = 1 / ln 2``::

    exp(x) = exp2(x * log2(e))
    s2     = S * log2(e) = (scale * log2(e)) * q.k - (slope * log2(e)) * |i - j|

so the kernels pre-multiply the softmax scale *and* the ALiBi slope by
``log2(e)`` (both terms in float32, the bias added after the scale), and all
the bookkeeping above happens on ``s2`` with ``exp2``.  The forward stores the
per-row log-sum-exp in base 2,

    lse2 = m + log2(l) = log2(sum_j exp2(s2_j)),       so that   P = exp2(s2 - lse2),

as float32 of shape (heads, total_tokens); this is all the backward needs to
recompute ``P`` block by block.

Backward (``dO`` the incoming gradient)::

    dV = P^T dO
    dP = dO V^T
    dS = P * (dP - delta),   delta_i = sum_j P_ij dP_ij = rowsum(dO * O)_i
    dQ = scale * dS K
    dK = scale * dS^T Q
    dslope_h = -sum_ij dS_ij |i - j|      (the bias enters S unscaled)

``delta`` is computed first by a small preprocessing kernel
(``_bwd_preprocess_kernel``).  Then two kernels recompute ``P``:

* ``_bwd_dkdv_kernel``: one program per (key block, head, sequence); it holds
  its K/V block and its dK/dV accumulators and streams the query blocks of the
  sequence (``P^T`` is computed directly as ``exp2(K Q^T * ... - lse2)``).
* ``_bwd_dq_kernel``: one program per (query block, head, sequence); it holds
  its Q/dO block and dQ accumulator and streams the key blocks.  When the
  slopes need a gradient it also sums ``dS_ij |i - j|`` per query row into a
  (heads, tokens) buffer, which the host sums per head.

Every output element is written by exactly one program, so the backward is
deterministic (no atomics) and output buffers need no zero-initialisation.

Grid
----

All main kernels use a flat 1-D grid of ``cdiv(max_seqlen, BLOCK) * heads *
batch`` programs, decomposed in-kernel as (block fastest, then head, then
sequence): consecutive programs share the same K/V (good L2 reuse), and a 1-D
grid avoids CUDA's 65535 limit on grid dimensions y/z, which a large packed
batch could exceed.  Programs whose block starts at or beyond the length of
their sequence return immediately (this also handles empty sequences).

Precision / dtypes
------------------

* Inputs fp16, bf16 or fp32.  All dots accumulate in fp32; the softmax
  statistics, ALiBi bias, ``P`` before rounding, ``dS`` before rounding, lse and
  delta are fp32.  As in FlashAttention, ``P`` and ``dS`` are rounded to the
  input dtype before being fed to the second matmul of each pair.
* fp32 inputs use ``input_precision="ieee"`` dots (no TF32), so fp32 results
  are accurate to fp32.
* bf16: the Triton 3.9 CPU interpreter computes ``tl.dot`` on bf16 operands
  incorrectly and truncates (instead of rounding) on fp32 -> bf16 casts.  When
  (and only when) running interpreted with bf16 inputs, the kernels therefore
  upcast every loaded tile to fp32 right after the load (so all dots run in
  fp32 and ``P``/``dS`` are not rounded to bf16), and round results to the
  nearest-even bf16 value with integer bit manipulation before the final
  store.  On a GPU the bf16 path uses native bf16 tensor-core dots.

Block sizes
-----------

Configs, pruning and autotuning live in ``tuning``: per-dtype config lists,
keyed on the padded head dim ``BLOCK_D``, a power-of-two bucket of
``max_seqlen`` and ``WINDOW``, results cached on disk across processes; under
the interpreter (``TRITON_INTERPRET=1``) one fixed small config.  Whether we
are interpreted is decided by Triton when ``@triton.jit`` runs, i.e. from
``TRITON_INTERPRET`` at the time this module is imported; we read that
decision back from the decorated kernel so the two can never disagree.
Triton's own ``tl.*`` helpers are decorated when ``triton`` is first imported,
so ``TRITON_INTERPRET`` must be set before that (the test-suite's conftest does
it); importing this module with the flag changed in between raises an
ImportError naming the problem.  CPU tensors are rejected with a clear error
when not interpreting.  (The interpreter path is tested with Triton 3.9;
Triton 3.6's interpreter cannot run data-dependent loop bounds under NumPy 2,
while its compiler builds these kernels fine.)

Tiles and windowing
-------------------

The bias is defined once, in ``_bias_positions`` and ``_scores``: positions
are taken relative to the program's own block and scaled by the base-2 slope
once per block, so a score costs one subtraction and one fused multiply-add
(no integer absolute value, no int -> float conversion per score).  Each
streaming loop is split into full blocks, which load and score without masks,
and the sequence's last partial block, the only one that needs them.

With ``window=True`` every query carries a *reach* (``windowing.key_reach``):
keys farther than it have a softmax weight that is provably exactly 0 in
float32, for any inputs, so a query block visits only the key blocks within
the largest reach of its rows (forward and dQ), and a key block only the query
blocks from the first to the last query whose reach covers one of its keys
(dK/dV; ``_span_kernel`` finds those once per head, per 16 keys).  Skipped blocks would add
exact zeros; the result equals the unskipped kernel's within float32 rounding
(the order of the online softmax updates differs).  ``COUNT`` makes each
program store the number of blocks it visited, for tests and FLOP accounting
(``windowing.visited_key_blocks`` / ``visited_query_blocks`` are the same
rules on the CPU).

Head dims 16..128 are supported, including non powers of two (40, 80, 96,
...): the head dim is padded to ``BLOCK_D = next_power_of_2(head_dim)`` and the
padding lanes are masked on load (as zeros, which contribute nothing to the
dots) and on store.

No-copy inputs: q, k and v are addressed with their own (token, head) strides,
so views such as ``qkv.view(T, 3, H, d).unbind(1)`` of a packed projection are
consumed in place; only a last-dim stride different from 1 forces a copy.
"""

from __future__ import annotations

import math
import operator

import torch
import triton
import triton.language as tl

from . import support, windowing
from .tuning import COMPILE_OPTIONS, Launcher, seq_bucket

UNBOUNDED: tl.constexpr = tl.constexpr(windowing.UNBOUNDED)
# The margins of windowing.key_reach, as constants of the kernels.
_UNDERFLOW: tl.constexpr = tl.constexpr(windowing.UNDERFLOW)
_REACH_ERR: tl.constexpr = tl.constexpr(windowing.SCORE_ERROR)
_REACH_RATE: tl.constexpr = tl.constexpr(windowing.RATE_MARGIN)
_REACH_ROUND_UP: tl.constexpr = tl.constexpr(windowing.ROUND_UP)
_LINEAR_BIAS_ERR: tl.constexpr = tl.constexpr(windowing.LINEAR_BIAS_ERROR)
# The dK/dV kernel's query spans are resolved per granule of this many keys (and queries); every
# BLOCK_N is a multiple of it.
_SPAN_GRANULE: tl.constexpr = tl.constexpr(windowing.SPAN_GRANULE)

__all__ = ["WINDOW_ALWAYS", "block_sizes", "check_cu_seqlens", "flash_attn_varlen_alibi",
           "query_spans", "window_reach"]

_LOG2E: tl.constexpr = tl.constexpr(1.4426950408889634)  # log2(e) = 1 / ln(2)



# --------------------------------------------------------------------------
# Position bias: the one definition of the score (swap point for other biases)
# --------------------------------------------------------------------------


@triton.jit
def _bias_positions(offset, BLOCK: tl.constexpr):
    """Positions ``offset + [0, BLOCK)`` as float32 of shape (BLOCK,), computed once per block.

    ``offset`` is relative to the program's own block, so positions are small integers, exact in
    float32, and so is every difference of two of them: the bias below rounds once, relative to
    itself. (Scaling the positions by the slope first would round each to the magnitude of the
    position, an error of a few ulps of ``slope * block offset`` in the bias of near keys.)
    """
    return (offset + tl.arange(0, BLOCK)).to(tl.float32)


@triton.jit
def _scores(qk, row_pos, col_pos, qk_scale, alibi2):
    """Base-2 scores of a tile: ``s2 = qk_scale * q.k - slope * log2(e) * |i - j|``.

    ``qk``: (R, C) float32 dot products; ``row_pos`` (R,) and ``col_pos`` (C,) from
    :func:`_bias_positions` (queries or keys along either axis: the bias is symmetric);
    ``alibi2`` the base-2 slope. The distance is exact; one multiply rounds the bias, as in
    ``slope * |i - j|`` computed in float32. This is the one definition of the position bias;
    :func:`_bias_terms` is its form on the tiles that do not cross the diagonal.
    """
    return qk * qk_scale - alibi2 * tl.abs(row_pos[:, None] - col_pos[None, :])


@triton.jit
def _bias_terms(row_pos, col_offset, alibi2, side, BLOCK_C: tl.constexpr):
    """The bias of a tile whose columns all lie on one side of its rows, as ``row[:, None] -
    col[None, :]``: ``side`` = +1 when the columns come after the rows, -1 before.

    There ``|r - c| = side * (c - r)``: with ``c = col_offset + j`` (``col_offset`` the columns'
    first position relative to the rows' block, ``j`` in ``[0, C)``) and ``slope = side *
    alibi2``, ``-alibi2 |r - c| = (slope r - slope col_offset) - slope j``. The column term
    ``slope j`` is the same on every tile of a loop (hoisted); the row term changes per tile but
    has only R entries. The callers fold the row term into a per-row quantity (the running max,
    the lse), so a score costs one multiply-add and one add before its ``exp2``, against a
    subtraction, an absolute value and two more operations in :func:`_scores`.

    Rounding, against :func:`_scores` (``eps = 2^-24``, ``d = |r - c|``, ``B`` = 128 >= the
    block sizes, ``col_offset <= d + B``): the row term rounds by ``eps alibi2 (d + 3B)``
    (``slope r``, ``slope col_offset`` and their difference), the column term by ``eps alibi2
    B``, their combination by ``eps alibi2 (d + 2B)``; the exact path by ``eps alibi2 d``. The
    two biases differ by at most ``2^-22 alibi2 (d + 256)``: ``windowing`` absorbs this in its
    bound, and the tests hold outputs, lse and gradients to it.
    """
    slope = side * alibi2
    row = slope * row_pos - slope * col_offset.to(tl.float32)
    return row, slope * tl.arange(0, BLOCK_C).to(tl.float32)


@triton.jit
def _diagonal(start, lo, end, BLOCK_OWN: tl.constexpr, BLOCK: tl.constexpr):
    """Split the streamed blocks ``[lo, end)`` (``lo`` a multiple of ``BLOCK``) around the
    program's own block ``[start, start + BLOCK_OWN)``: blocks before ``before_end`` lie wholly
    before it, blocks from ``after_start`` wholly after it, those between cross its diagonal."""
    before_end = tl.minimum(tl.maximum(start // BLOCK * BLOCK, lo), end)
    after_start = tl.minimum(tl.maximum(tl.cdiv(start + BLOCK_OWN, BLOCK) * BLOCK, before_end), end)
    return before_end, after_start


# --------------------------------------------------------------------------
# Shared prologue and tile helpers
# --------------------------------------------------------------------------


@triton.jit
def _program_coords(num_heads, max_seqlen, BLOCK: tl.constexpr):
    """Decompose the flat program id into (block index, head, sequence)."""
    pid = tl.program_id(0)
    num_blocks = tl.cdiv(max_seqlen, BLOCK)
    pid_blk = pid % num_blocks
    pid_bh = pid // num_blocks
    return pid_blk, pid_bh % num_heads, pid_bh // num_heads


@triton.jit
def _prologue(CU_SEQLENS, SLOPES, num_heads, max_seqlen, BLOCK: tl.constexpr):
    """Where this program works: (block start, head, sequence start, sequence length, base-2
    slope).  The block start is relative to the sequence; the caller returns when it is at or
    past the sequence's end (this also covers empty sequences)."""
    pid_blk, off_h, off_b = _program_coords(num_heads, max_seqlen, BLOCK)
    seq_start = tl.load(CU_SEQLENS + off_b)
    seqlen = tl.load(CU_SEQLENS + off_b + 1) - seq_start
    # ALiBi slope of this head in base-2 units: bias2 = -slope * log2(e) * |i - j|
    alibi2 = tl.load(SLOPES + off_h).to(tl.float32) * _LOG2E
    return pid_blk * BLOCK, off_h, seq_start, seqlen, alibi2


@triton.jit
def _token_block(total_tokens, head_dim, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr):
    """Where a program of the per-token kernels (grid: token blocks, heads) works: its head, the
    int64 token offsets of its block and their mask, the head-dim lanes and theirs."""
    offs_t = (tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)).to(tl.int64)
    offs_d = tl.arange(0, BLOCK_D)
    return tl.program_id(1), offs_t, offs_t < total_tokens, offs_d, offs_d < head_dim


@triton.jit
def _load_tile(base, tok, stride_t, mask_t, offs_d, mask_d, UPCAST: tl.constexpr,
               MASK_T: tl.constexpr, EVEN_D: tl.constexpr):
    """Load a (len(tok), BLOCK_D) tile of rows ``tok``; masked rows/lanes read as 0.

    ``MASK_T`` False: every row is inside the sequence.  ``EVEN_D``: head_dim == BLOCK_D.
    """
    ptrs = base + tok[:, None] * stride_t + offs_d[None, :]
    if MASK_T:
        if EVEN_D:
            tile = tl.load(ptrs, mask=mask_t[:, None], other=0.0)
        else:
            tile = tl.load(ptrs, mask=mask_t[:, None] & mask_d[None, :], other=0.0)
    else:
        if EVEN_D:
            tile = tl.load(ptrs)
        else:
            tile = tl.load(ptrs, mask=mask_d[None, :], other=0.0)
    if UPCAST:
        tile = tile.to(tl.float32)
    return tile


@triton.jit
def _load_row(base, offs, mask, MASK: tl.constexpr):
    """Load a float32 per-token row (lse, delta) at positions ``offs``."""
    if MASK:
        return tl.load(base + offs, mask=mask, other=0.0)
    else:
        return tl.load(base + offs)


@triton.jit
def _dot(a, b, acc, IEEE: tl.constexpr):
    """``acc + a @ b``, accumulated in fp32.

    ``IEEE`` (fp32 operands): exact fp32 products instead of TF32 on GPUs.
    Otherwise (fp16/bf16 operands) the default tensor-core path.
    """
    if IEEE:
        return tl.dot(a, b, acc, input_precision="ieee")
    else:
        return tl.dot(a, b, acc)


@triton.jit
def _round_to_bf16_grid(x):
    """Round fp32 ``x`` to the nearest bf16 value (ties to even), kept as fp32.

    bf16 is the upper half of an fp32 bit pattern.  Adding 0x7FFF plus the
    lowest kept bit and clearing the lower 16 bits implements
    round-to-nearest-even on the bit pattern (valid for finite values); the
    following fp32 -> bf16 cast is then exact whatever rounding it uses.
    """
    bits = x.to(tl.int32, bitcast=True)
    bits = (bits + (0x7FFF + ((bits >> 16) & 1))) & -65536
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def _store_tile(base, tok, stride_t, mask_t, offs_d, mask_d, val, ROUND_BF16: tl.constexpr):
    """Store fp32 ``val`` rows ``tok`` into ``base`` (cast to the buffer dtype)."""
    if ROUND_BF16:
        val = _round_to_bf16_grid(val)
    tl.store(
        base + tok[:, None] * stride_t + offs_d[None, :],
        val.to(base.dtype.element_ty),
        mask=mask_t[:, None] & mask_d[None, :],
    )


@triton.jit
def _block_reach(REACH_SEQ, start, seqlen, BLOCK: tl.constexpr):
    """Largest reach (see ``windowing``) of the query rows ``start + [0, BLOCK)``."""
    offs = start + tl.arange(0, BLOCK)
    return tl.max(tl.load(REACH_SEQ + offs, mask=offs < seqlen, other=0), 0)


@triton.jit
def _skip_ok(DO_NONFINITE, off_h, seqlen, WINDOW: tl.constexpr):
    """Whether the backward may skip blocks of head ``off_h``: not when its ``dO`` holds a
    non-finite number (``0 * inf`` is NaN, so a zero weight does not make such a key inert);
    the preprocessing kernel sets ``DO_NONFINITE[h]``."""
    skip_ok = seqlen >= 0
    if WINDOW:
        skip_ok = tl.load(DO_NONFINITE + off_h) == 0
    return skip_ok


@triton.jit
def _key_window(REACH_SEQ, start_m, seqlen, skip_ok, BLOCK_M: tl.constexpr,
                BLOCK_N: tl.constexpr, WINDOW: tl.constexpr):
    """Key range ``[lo, hi)`` a query block visits: ``lo`` a multiple of BLOCK_N, ``hi <=
    seqlen``.  Without windowing (or ``skip_ok`` False), the whole sequence; with it, the key
    blocks meeting ``[start_m - Rb, start_m + BLOCK_M + Rb)``, ``Rb`` the block's reach."""
    if WINDOW:
        reach = tl.where(skip_ok, _block_reach(REACH_SEQ, start_m, seqlen, BLOCK_M), UNBOUNDED)
        lo = tl.maximum(start_m - reach, 0) // BLOCK_N * BLOCK_N
        hi = tl.minimum(start_m + BLOCK_M + reach, seqlen)
    else:
        lo = seqlen * 0
        hi = seqlen
    return lo, hi


@triton.jit
def _query_span(SPAN_FIRST, SPAN_LAST, start_n, seqlen, skip_ok, BLOCK_M: tl.constexpr,
                BLOCK_N: tl.constexpr, WINDOW: tl.constexpr):
    """Query range ``[lo, hi)`` (``lo`` a multiple of BLOCK_M) a key block visits: the query
    blocks holding the first and the last query whose reach covers one of its keys, read from
    the span pre-pass (:func:`_span_kernel`, once per head) with two loads. ``SPAN_FIRST`` and
    ``SPAN_LAST`` point at the sequence's first key granule. Both bounds grow with the key
    position, so the block's first granule holds its first query and its last granule its last
    (BLOCK_N a multiple of the granule: ``tuning`` ships no other). The key block's own query
    blocks always count (a query's reach covers itself)."""
    if WINDOW:
        first = tl.load(SPAN_FIRST + start_n // _SPAN_GRANULE)
        last = tl.load(SPAN_LAST + (tl.minimum(start_n + BLOCK_N, seqlen) - 1) // _SPAN_GRANULE)
        lo = tl.where(skip_ok, first // BLOCK_M * BLOCK_M, 0)
        hi = tl.where(skip_ok, tl.minimum((last // BLOCK_M + 1) * BLOCK_M, seqlen), seqlen)
    else:
        lo = seqlen * 0
        hi = seqlen
    return lo, hi


# --------------------------------------------------------------------------
# Windowing pre-pass: the per-query reach of ``windowing.key_reach``, on the device
# --------------------------------------------------------------------------


@triton.jit
def _key_bound_kernel(K, V, KMAX, stride_kt, stride_kh, stride_vt, stride_vh, total_tokens,
                      head_dim, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr):
    """``KMAX[h] = max_j |k_j|`` over every token of head ``h``, +inf when a key norm or a value
    of the head is not finite (such a head skips nothing).  One program per (token block, head);
    ``KMAX`` holds the float32 bit patterns, zero-initialised: for non-negative floats the bit
    patterns order as the values, so an integer atomic max is a float max."""
    off_h, offs_t, mask_t, offs_d, mask_d = _token_block(total_tokens, head_dim, BLOCK_T, BLOCK_D)
    k = _load_tile(K + off_h * stride_kh, offs_t, stride_kt, mask_t, offs_d, mask_d, True, True,
                   False)
    v = _load_tile(V + off_h * stride_vh, offs_t, stride_vt, mask_t, offs_d, mask_d, True, True,
                   False)
    k_norm = tl.sqrt(tl.sum(k * k, 1))
    k_norm = tl.where(k_norm < float("inf"), k_norm, float("inf"))  # NaN -> inf
    v_finite = tl.min(tl.min((tl.abs(v) < float("inf")).to(tl.int32), 1), 0)
    bound = tl.where(v_finite != 0, tl.max(k_norm, 0), float("inf"))
    tl.atomic_max(KMAX + off_h, bound.to(tl.int32, bitcast=True))


@triton.jit
def _reach_kernel(Q, K, SLOPES, KMAX, REACH, stride_qt, stride_qh, stride_kt, stride_kh,
                  stride_reach_h, total_tokens, head_dim, qk_scale, abs_qk_scale,
                  BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr):
    """``REACH[h, i]``: the reach of query ``i`` in head ``h`` (``windowing.key_reach``, the same
    formula and margins), int32.  One program per (token block, head), after
    :func:`_key_bound_kernel`.  ``qk_scale`` = scale * log2(e), ``abs_qk_scale`` its magnitude."""
    off_h, offs_t, mask_t, offs_d, mask_d = _token_block(total_tokens, head_dim, BLOCK_T, BLOCK_D)
    q = _load_tile(Q + off_h * stride_qh, offs_t, stride_qt, mask_t, offs_d, mask_d, True, True,
                   False)
    k = _load_tile(K + off_h * stride_kh, offs_t, stride_kt, mask_t, offs_d, mask_d, True, True,
                   False)
    k_max = tl.load(KMAX + off_h).to(tl.float32, bitcast=True)
    q_norm = tl.sqrt(tl.sum(q * q, 1))
    k_norm = tl.sqrt(tl.sum(k * k, 1))
    gap = abs_qk_scale * q_norm * k_max - qk_scale * tl.sum(q * k, 1)
    slope2 = tl.load(SLOPES + off_h).to(tl.float32) * _LOG2E
    err = _REACH_ERR * abs_qk_scale * q_norm * (k_max + k_norm) + 1.0 + _LINEAR_BIAS_ERR * slope2
    rate = slope2 * _REACH_RATE
    reach = (gap + err + _UNDERFLOW) / rate * _REACH_ROUND_UP + 1.0
    reach = tl.where(reach < float("inf"), tl.minimum(reach, UNBOUNDED), UNBOUNDED)  # NaN too
    reach = tl.where(rate > 0, reach, UNBOUNDED)
    tl.store(REACH + off_h * stride_reach_h + offs_t, tl.floor(reach).to(tl.int32), mask=mask_t)


@triton.jit(do_not_specialize=["max_seqlen", "stride_reach_h", "stride_span_s", "stride_span_h"])
def _span_kernel(CU_SEQLENS, REACH, SPAN, stride_reach_h, stride_span_s, stride_span_h,
                 num_heads, max_seqlen, BLOCK_G: tl.constexpr, CHUNK_Q: tl.constexpr):
    """The query span of every key granule (``_SPAN_GRANULE`` keys) of a head, for the dK/dV
    kernel. One program per (BLOCK_G key granules, head, sequence); it streams the sequence's
    reaches ``CHUNK_Q`` query granules at a time.

    Query ``i`` may weigh key ``j`` only when ``|i - j| <= R_i`` (``windowing``). A query granule
    meets the keys ``[min(i - R_i), max(i + R_i)]`` over its queries ``i``; key granule ``[a, b]``
    stores the first token of the first query granule that reaches up to ``a``,
    ``SPAN[0, h, s + g]``, and the last token of the last one that reaches down to ``b``,
    ``SPAN[1, h, s + g]`` (``s`` the sequence's first token, ``g`` the granule's index in it).
    Both grow with the key position; a query granule always meets its own keys."""
    G: tl.constexpr = _SPAN_GRANULE
    pid_blk, off_h, off_b = _program_coords(num_heads, max_seqlen, BLOCK_G * G)
    seq_start = tl.load(CU_SEQLENS + off_b)
    seqlen = tl.load(CU_SEQLENS + off_b + 1) - seq_start
    key_first = pid_blk * (BLOCK_G * G) + tl.arange(0, BLOCK_G) * G
    if pid_blk * (BLOCK_G * G) >= seqlen:
        return
    key_last = tl.minimum(key_first + G, seqlen) - 1
    reach_seq = REACH + off_h * stride_reach_h + seq_start
    first = tl.full([BLOCK_G], 0, tl.int32) + seqlen
    last = tl.full([BLOCK_G], -1, tl.int32)
    for chunk in range(0, seqlen, CHUNK_Q * G):
        offs = chunk + tl.arange(0, CHUNK_Q * G)
        inside = offs < seqlen
        reach = tl.load(reach_seq + offs, mask=inside, other=0)
        # outside the sequence: a right end of -1 and a left end of seqlen meet no key
        right = tl.max(tl.reshape(tl.where(inside, offs + reach, -1), (CHUNK_Q, G)), 1)
        left = tl.min(tl.reshape(tl.where(inside, offs - reach, seqlen), (CHUNK_Q, G)), 1)
        query_first = chunk + tl.arange(0, CHUNK_Q) * G
        query_last = tl.minimum(query_first + G, seqlen) - 1
        first = tl.minimum(first, tl.min(
            tl.where(right[None, :] >= key_first[:, None], query_first[None, :], seqlen), 1))
        last = tl.maximum(last, tl.max(
            tl.where(left[None, :] <= key_last[:, None], query_last[None, :], -1), 1))
    span = SPAN + off_h * stride_span_h + seq_start + key_first // G
    inside = key_first < seqlen
    tl.store(span, first, mask=inside)
    tl.store(span + stride_span_s, last, mask=inside)


# --------------------------------------------------------------------------
# Forward
# --------------------------------------------------------------------------


@triton.jit
def _fwd_inner(acc, l_i, m_i, visited, q, row_pos, K_H, V_H, stride_kt, stride_vt, seq_start,
               start_m, lo, hi, seqlen, offs_d, mask_d, qk_scale, alibi2, side,
               BLOCK_N: tl.constexpr, MASK_N: tl.constexpr, LINEAR: tl.constexpr,
               UPCAST: tl.constexpr, IEEE: tl.constexpr, EVEN_D: tl.constexpr,
               COUNT: tl.constexpr):
    """Online-softmax update over the key blocks starting in ``[lo, hi)``.

    ``MASK_N`` only for the sequence's last, partial key block: every other block is full, so
    its loads and scores need no key mask.  Every block visited has at least one valid key, so
    ``m_new`` is finite and ``exp2(m_i - m_new)`` is 0 (never NaN) on the first step.
    """
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        mask_n = offs_n < seqlen
        tok_n = seq_start + offs_n
        k = _load_tile(K_H, tok_n, stride_kt, mask_n, offs_d, mask_d, UPCAST, MASK_N, EVEN_D)
        v = _load_tile(V_H, tok_n, stride_vt, mask_n, offs_d, mask_d, UPCAST, MASK_N, EVEN_D)

        qk = _dot(q, tl.trans(k), tl.zeros([q.shape[0], BLOCK_N], dtype=tl.float32), IEEE)
        if LINEAR:
            # s2 = t + row: the row term joins the running max instead of every score
            row, col = _bias_terms(row_pos, start_n - start_m, alibi2, side, BLOCK_N)
            t = qk * qk_scale - col[None, :]
            m_new = tl.maximum(m_i, row + tl.max(t, 1))
            p = tl.exp2(t - (m_new - row)[:, None])
        else:
            s = _scores(qk, row_pos, _bias_positions(start_n - start_m, BLOCK_N), qk_scale,
                        alibi2)
            if MASK_N:
                s = tl.where(mask_n[None, :], s, float("-inf"))  # keys past the end: no weight
            m_new = tl.maximum(m_i, tl.max(s, 1))
            p = tl.exp2(s - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None]
        acc = _dot(p.to(v.dtype), v, acc, IEEE)
        m_i = m_new
        if COUNT:
            visited += 1
    return acc, l_i, m_i, visited


@triton.jit(do_not_specialize=["max_seqlen", "seq_bucket"])
def _fwd_kernel(
    Q, K, V, O, LSE, CU_SEQLENS, SLOPES, REACH, COUNTS,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh,
    stride_ot, stride_oh, stride_lse_h, stride_reach_h,
    num_heads, max_seqlen, head_dim, qk_scale, seq_bucket,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    UPCAST: tl.constexpr, ROUND_BF16: tl.constexpr, IEEE: tl.constexpr,
    EVEN_D: tl.constexpr, WINDOW: tl.constexpr, COUNT: tl.constexpr,
    LINEAR_BIAS: tl.constexpr,
):
    # qk_scale = softmax_scale * log2(e): scores come out directly in base 2.
    # seq_bucket only keys the autotuner.
    start_m, off_h, seq_start, seqlen, alibi2 = _prologue(CU_SEQLENS, SLOPES, num_heads,
                                                          max_seqlen, BLOCK_M)
    if start_m >= seqlen:
        return
    seq_start = seq_start.to(tl.int64)  # token offsets * strides may exceed 2**31

    # positions inside the sequence (they restart at 0 for every sequence)
    offs_m = start_m + tl.arange(0, BLOCK_M)
    mask_m = offs_m < seqlen
    offs_d = tl.arange(0, BLOCK_D)
    mask_d = offs_d < head_dim
    tok_m = seq_start + offs_m

    q = _load_tile(Q + off_h * stride_qh, tok_m, stride_qt, mask_m, offs_d, mask_d, UPCAST,
                   True, EVEN_D)
    row_pos = _bias_positions(0, BLOCK_M)

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)  # running row max of s2
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)  # running sum of exp2(s2 - m_i)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)  # running sum of exp2(s2 - m_i) v
    visited = seqlen * 0  # key blocks visited (COUNT)

    lo, hi = _key_window(REACH + off_h * stride_reach_h + seq_start, start_m, seqlen,
                         seqlen >= 0, BLOCK_M, BLOCK_N, WINDOW)
    full_end = tl.minimum(hi, seqlen // BLOCK_N * BLOCK_N)
    K_H = K + off_h * stride_kh
    V_H = V + off_h * stride_vh
    # full key blocks before the query block (linear bias), across its diagonal (exact), after
    # it (linear); then the sequence's partial last block (masked, exact).
    before_end, after_start = _diagonal(start_m, lo, full_end, BLOCK_M, BLOCK_N)
    for part in tl.static_range(3):
        part_lo = lo if part == 0 else (before_end if part == 1 else after_start)
        part_hi = before_end if part == 0 else (after_start if part == 1 else full_end)
        acc, l_i, m_i, visited = _fwd_inner(
            acc, l_i, m_i, visited, q, row_pos, K_H, V_H, stride_kt, stride_vt, seq_start,
            start_m, part_lo, part_hi, seqlen, offs_d, mask_d, qk_scale, alibi2, part - 1.0,
            BLOCK_N, False, LINEAR_BIAS and part != 1, UPCAST, IEEE, EVEN_D, COUNT)
    acc, l_i, m_i, visited = _fwd_inner(
        acc, l_i, m_i, visited, q, row_pos, K_H, V_H, stride_kt, stride_vt, seq_start, start_m,
        tl.maximum(lo, full_end), hi, seqlen, offs_d, mask_d, qk_scale, alibi2, 0.0,
        BLOCK_N, True, False, UPCAST, IEEE, EVEN_D, COUNT)

    # O = acc / l ;  lse2 = m + log2(l)   (l >= 1 since the max term is exp2(0))
    acc = acc / l_i[:, None]
    tl.store(LSE + off_h * stride_lse_h + tok_m, m_i + tl.log2(l_i), mask=mask_m)
    _store_tile(O + off_h * stride_oh, tok_m, stride_ot, mask_m, offs_d, mask_d, acc, ROUND_BF16)
    if COUNT:
        tl.store(COUNTS + tl.program_id(0), visited)


# --------------------------------------------------------------------------
# Backward
# --------------------------------------------------------------------------


@triton.jit
def _bwd_preprocess_kernel(
    O, DO, DELTA, DO_NONFINITE,
    stride_ot, stride_oh, stride_dot, stride_doh, stride_delta_h,
    total_tokens, head_dim,
    BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr, WINDOW: tl.constexpr,
):
    # delta_i = sum_d dO_id * O_id  (= sum_j P_ij dP_ij), one program per
    # (token block, head); sequences do not matter here.  With windowing, also flag the head in
    # DO_NONFINITE (zero-initialised) when its dO holds a non-finite number: see _skip_ok.
    off_h, offs_t, mask_t, offs_d, mask_d = _token_block(total_tokens, head_dim, BLOCK_T, BLOCK_D)
    o = _load_tile(O + off_h * stride_oh, offs_t, stride_ot, mask_t, offs_d, mask_d, True,
                   True, False)
    do = _load_tile(DO + off_h * stride_doh, offs_t, stride_dot, mask_t, offs_d, mask_d, True,
                    True, False)
    tl.store(DELTA + off_h * stride_delta_h + offs_t, tl.sum(o * do, 1), mask=mask_t)
    if WINDOW:
        nonfinite = tl.max(tl.max((~(tl.abs(do) < float("inf"))).to(tl.int32), 1), 0)
        if nonfinite != 0:
            tl.atomic_max(DO_NONFINITE + off_h, nonfinite)


@triton.jit
def _dkdv_inner(dk, dv, visited, k, v, row_pos, Q_H, DO_H, LSE_SEQ, DELTA_SEQ, stride_qt,
                stride_dot, seq_start, start_n, lo, hi, seqlen, offs_d, mask_d, qk_scale,
                alibi2, side, BLOCK_M: tl.constexpr, MASK_M: tl.constexpr,
                LINEAR: tl.constexpr, UPCAST: tl.constexpr, IEEE: tl.constexpr,
                EVEN_D: tl.constexpr, COUNT: tl.constexpr):
    """dK/dV accumulation over the query blocks starting in ``[lo, hi)``; ``MASK_M`` only for
    the last, partial query block (its padding queries read lse = delta = 0 and must get no
    weight).  The padding rows of a partial key block are never stored, and each row of dK/dV
    depends on its own key row only, so they need no mask."""
    for start_m in range(lo, hi, BLOCK_M):
        offs_m = start_m + tl.arange(0, BLOCK_M)
        mask_m = offs_m < seqlen
        tok_m = seq_start + offs_m
        q = _load_tile(Q_H, tok_m, stride_qt, mask_m, offs_d, mask_d, UPCAST, MASK_M, EVEN_D)
        do = _load_tile(DO_H, tok_m, stride_dot, mask_m, offs_d, mask_d, UPCAST, MASK_M, EVEN_D)
        lse = _load_row(LSE_SEQ, offs_m, mask_m, MASK_M)
        delta = _load_row(DELTA_SEQ, offs_m, mask_m, MASK_M)

        qk_t = _dot(k, tl.trans(q), tl.zeros([k.shape[0], BLOCK_M], dtype=tl.float32), IEEE)
        if LINEAR:  # the column (query) term joins the lse
            row, col = _bias_terms(row_pos, start_m - start_n, alibi2, side, BLOCK_M)
            p_t = tl.exp2(qk_t * qk_scale + row[:, None] - (col + lse)[None, :])
        else:
            s_t = _scores(qk_t, row_pos, _bias_positions(start_m - start_n, BLOCK_M), qk_scale,
                          alibi2)
            p_t = tl.exp2(s_t - lse[None, :])
        if MASK_M:
            p_t = tl.where(mask_m[None, :], p_t, 0.0)

        dv = _dot(p_t.to(do.dtype), do, dv, IEEE)
        dp_t = _dot(v, tl.trans(do), tl.zeros([k.shape[0], BLOCK_M], dtype=tl.float32), IEEE)
        ds_t = p_t * (dp_t - delta[None, :])
        dk = _dot(ds_t.to(q.dtype), q, dk, IEEE)
        if COUNT:
            visited += 1
    return dk, dv, visited


# The span strides are read once per program: not specialised, so that no token or head count
# (nor the batch size, through the unwindowed placeholder) compiles another variant.
@triton.jit(do_not_specialize=["max_seqlen", "seq_bucket", "stride_span_s", "stride_span_h"])
def _bwd_dkdv_kernel(
    Q, K, V, DO, LSE, DELTA, DK, DV, CU_SEQLENS, SLOPES, SPAN, DO_NONFINITE, COUNTS,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh,
    stride_dot, stride_doh, stride_dkt, stride_dkh, stride_dvt, stride_dvh,
    stride_lse_h, stride_span_s, stride_span_h,
    num_heads, max_seqlen, head_dim, qk_scale, sm_scale, seq_bucket,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    UPCAST: tl.constexpr, ROUND_BF16: tl.constexpr, IEEE: tl.constexpr,
    EVEN_D: tl.constexpr, WINDOW: tl.constexpr, COUNT: tl.constexpr,
    LINEAR_BIAS: tl.constexpr,
):
    # One program per (key block of BLOCK_N keys, head, sequence); it streams
    # the query blocks (BLOCK_M queries) of its sequence.  Everything is
    # computed transposed (keys along rows), so no transposed store is needed:
    #   s2^T = (K Q^T) * scale * log2(e) - slope * log2(e) * |i - j|
    #   P^T  = exp2(s2^T - lse2[None, :])
    #   dV  += P^T dO
    #   dP^T = V dO^T
    #   dS^T = P^T * (dP^T - delta[None, :])
    #   dK  += dS^T Q                      (times scale at the end)
    start_n, off_h, seq_start, seqlen, alibi2 = _prologue(CU_SEQLENS, SLOPES, num_heads,
                                                          max_seqlen, BLOCK_N)
    if start_n >= seqlen:
        return
    span = SPAN + off_h * stride_span_h + seq_start
    lo, hi = _query_span(span, span + stride_span_s, start_n, seqlen,
                         _skip_ok(DO_NONFINITE, off_h, seqlen, WINDOW), BLOCK_M, BLOCK_N, WINDOW)
    seq_start = seq_start.to(tl.int64)

    offs_n = start_n + tl.arange(0, BLOCK_N)
    mask_n = offs_n < seqlen
    offs_d = tl.arange(0, BLOCK_D)
    mask_d = offs_d < head_dim
    tok_n = seq_start + offs_n

    k = _load_tile(K + off_h * stride_kh, tok_n, stride_kt, mask_n, offs_d, mask_d, UPCAST,
                   True, EVEN_D)
    v = _load_tile(V + off_h * stride_vh, tok_n, stride_vt, mask_n, offs_d, mask_d, UPCAST,
                   True, EVEN_D)
    row_pos = _bias_positions(0, BLOCK_N)
    dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    visited = seqlen * 0

    full_end = tl.minimum(hi, seqlen // BLOCK_M * BLOCK_M)
    Q_H = Q + off_h * stride_qh
    DO_H = DO + off_h * stride_doh
    LSE_SEQ = LSE + off_h * stride_lse_h + seq_start
    DELTA_SEQ = DELTA + off_h * stride_lse_h + seq_start
    # as in the forward: query blocks before, across and after the diagonal, then the last one
    before_end, after_start = _diagonal(start_n, lo, full_end, BLOCK_N, BLOCK_M)
    for part in tl.static_range(3):
        part_lo = lo if part == 0 else (before_end if part == 1 else after_start)
        part_hi = before_end if part == 0 else (after_start if part == 1 else full_end)
        dk, dv, visited = _dkdv_inner(
            dk, dv, visited, k, v, row_pos, Q_H, DO_H, LSE_SEQ, DELTA_SEQ, stride_qt, stride_dot,
            seq_start, start_n, part_lo, part_hi, seqlen, offs_d, mask_d, qk_scale, alibi2,
            part - 1.0, BLOCK_M, False, LINEAR_BIAS and part != 1, UPCAST, IEEE, EVEN_D, COUNT)
    dk, dv, visited = _dkdv_inner(
        dk, dv, visited, k, v, row_pos, Q_H, DO_H, LSE_SEQ, DELTA_SEQ, stride_qt, stride_dot,
        seq_start, start_n, tl.maximum(lo, full_end), hi, seqlen, offs_d, mask_d, qk_scale,
        alibi2, 0.0, BLOCK_M, True, False, UPCAST, IEEE, EVEN_D, COUNT)

    dk = dk * sm_scale
    _store_tile(DK + off_h * stride_dkh, tok_n, stride_dkt, mask_n, offs_d, mask_d, dk, ROUND_BF16)
    _store_tile(DV + off_h * stride_dvh, tok_n, stride_dvt, mask_n, offs_d, mask_d, dv, ROUND_BF16)
    if COUNT:
        tl.store(COUNTS + tl.program_id(0), visited)


@triton.jit
def _dq_inner(dq, dslope, visited, q, do, lse, delta, row_pos, K_H, V_H, stride_kt, stride_vt,
              seq_start, start_m, lo, hi, seqlen, offs_d, mask_d, qk_scale, alibi2, side,
              BLOCK_N: tl.constexpr, MASK_N: tl.constexpr, LINEAR: tl.constexpr,
              UPCAST: tl.constexpr, IEEE: tl.constexpr, EVEN_D: tl.constexpr,
              COUNT: tl.constexpr, SLOPE_GRAD: tl.constexpr):
    """dQ accumulation over the key blocks starting in ``[lo, hi)``; ``MASK_N`` only for the
    last, partial key block. With ``SLOPE_GRAD``, also each row's ``sum_j dS_ij |i - j|`` into
    ``dslope`` (BLOCK_M,): the slope's gradient is minus its sum over the rows."""
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        mask_n = offs_n < seqlen
        tok_n = seq_start + offs_n
        k = _load_tile(K_H, tok_n, stride_kt, mask_n, offs_d, mask_d, UPCAST, MASK_N, EVEN_D)
        v = _load_tile(V_H, tok_n, stride_vt, mask_n, offs_d, mask_d, UPCAST, MASK_N, EVEN_D)

        qk = _dot(q, tl.trans(k), tl.zeros([q.shape[0], BLOCK_N], dtype=tl.float32), IEEE)
        if LINEAR:  # the row term joins the lse
            row, col = _bias_terms(row_pos, start_n - start_m, alibi2, side, BLOCK_N)
            p = tl.exp2(qk * qk_scale - col[None, :] - (lse - row)[:, None])
        else:
            s = _scores(qk, row_pos, _bias_positions(start_n - start_m, BLOCK_N), qk_scale,
                        alibi2)
            p = tl.exp2(s - lse[:, None])
        if MASK_N:
            p = tl.where(mask_n[None, :], p, 0.0)  # keys past the end get no weight

        dp = _dot(do, tl.trans(v), tl.zeros([q.shape[0], BLOCK_N], dtype=tl.float32), IEEE)
        ds = p * (dp - delta[:, None])
        dq = _dot(ds.to(k.dtype), k, dq, IEEE)
        if SLOPE_GRAD:
            distance = tl.abs(row_pos[:, None] - _bias_positions(start_n - start_m, BLOCK_N)[None, :])
            dslope += tl.sum(ds * distance, 1)
        if COUNT:
            visited += 1
    return dq, dslope, visited


@triton.jit(do_not_specialize=["max_seqlen", "seq_bucket"])
def _bwd_dq_kernel(
    Q, K, V, DO, LSE, DELTA, DQ, DSLOPE_ROWS, CU_SEQLENS, SLOPES, REACH, DO_NONFINITE, COUNTS,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh,
    stride_dot, stride_doh, stride_dqt, stride_dqh,
    stride_lse_h, stride_reach_h,
    num_heads, max_seqlen, head_dim, qk_scale, sm_scale, seq_bucket,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    UPCAST: tl.constexpr, ROUND_BF16: tl.constexpr, IEEE: tl.constexpr,
    EVEN_D: tl.constexpr, WINDOW: tl.constexpr, COUNT: tl.constexpr,
    LINEAR_BIAS: tl.constexpr, SLOPE_GRAD: tl.constexpr,
):
    # One program per (query block, head, sequence); it streams the key blocks:
    #   s2  = (Q K^T) * scale * log2(e) - slope * log2(e) * |i - j|
    #   P   = exp2(s2 - lse2[:, None])
    #   dP  = dO V^T
    #   dS  = P * (dP - delta[:, None])
    #   dQ += dS K                         (times scale at the end)
    # and with SLOPE_GRAD, as the bias -slope |i - j| enters S unscaled:
    #   dslope_rows[i] = -sum_j dS_ij |i - j|   (the slope's gradient is their sum)
    start_m, off_h, seq_start, seqlen, alibi2 = _prologue(CU_SEQLENS, SLOPES, num_heads,
                                                          max_seqlen, BLOCK_M)
    if start_m >= seqlen:
        return
    seq_start = seq_start.to(tl.int64)

    offs_m = start_m + tl.arange(0, BLOCK_M)
    mask_m = offs_m < seqlen
    offs_d = tl.arange(0, BLOCK_D)
    mask_d = offs_d < head_dim
    tok_m = seq_start + offs_m

    q = _load_tile(Q + off_h * stride_qh, tok_m, stride_qt, mask_m, offs_d, mask_d, UPCAST,
                   True, EVEN_D)
    do = _load_tile(DO + off_h * stride_doh, tok_m, stride_dot, mask_m, offs_d, mask_d, UPCAST,
                    True, EVEN_D)
    lse = tl.load(LSE + off_h * stride_lse_h + tok_m, mask=mask_m, other=0.0)
    delta = tl.load(DELTA + off_h * stride_lse_h + tok_m, mask=mask_m, other=0.0)
    row_pos = _bias_positions(0, BLOCK_M)
    dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    dslope = tl.zeros([BLOCK_M], dtype=tl.float32)
    visited = seqlen * 0

    lo, hi = _key_window(REACH + off_h * stride_reach_h + seq_start, start_m, seqlen,
                         _skip_ok(DO_NONFINITE, off_h, seqlen, WINDOW), BLOCK_M, BLOCK_N, WINDOW)
    full_end = tl.minimum(hi, seqlen // BLOCK_N * BLOCK_N)
    K_H = K + off_h * stride_kh
    V_H = V + off_h * stride_vh
    # as in the forward: key blocks before, across and after the diagonal, then the last one
    before_end, after_start = _diagonal(start_m, lo, full_end, BLOCK_M, BLOCK_N)
    for part in tl.static_range(3):
        part_lo = lo if part == 0 else (before_end if part == 1 else after_start)
        part_hi = before_end if part == 0 else (after_start if part == 1 else full_end)
        dq, dslope, visited = _dq_inner(
            dq, dslope, visited, q, do, lse, delta, row_pos, K_H, V_H, stride_kt, stride_vt,
            seq_start, start_m, part_lo, part_hi, seqlen, offs_d, mask_d, qk_scale, alibi2,
            part - 1.0, BLOCK_N, False, LINEAR_BIAS and part != 1, UPCAST, IEEE, EVEN_D, COUNT,
            SLOPE_GRAD)
    dq, dslope, visited = _dq_inner(
        dq, dslope, visited, q, do, lse, delta, row_pos, K_H, V_H, stride_kt, stride_vt,
        seq_start, start_m, tl.maximum(lo, full_end), hi, seqlen, offs_d, mask_d, qk_scale,
        alibi2, 0.0, BLOCK_N, True, False, UPCAST, IEEE, EVEN_D, COUNT, SLOPE_GRAD)

    dq = dq * sm_scale
    _store_tile(DQ + off_h * stride_dqh, tok_m, stride_dqt, mask_m, offs_d, mask_d, dq, ROUND_BF16)
    if SLOPE_GRAD:  # every row of the sequence is stored by exactly one program: no reset needed
        tl.store(DSLOPE_ROWS + off_h * stride_lse_h + tok_m, -dslope, mask=mask_m)
    if COUNT:
        tl.store(COUNTS + tl.program_id(0), visited)


# --------------------------------------------------------------------------
# Launch configuration
# --------------------------------------------------------------------------


def _jit_mode(fn):
    """'compiled' / 'interpreted' for a @triton.jit object, None if unknown."""
    if isinstance(fn, triton.runtime.JITFunction):
        return "compiled"
    if type(fn).__name__ == "InterpretedFunction":
        return "interpreted"
    return None


# Triton decided at decoration time (from TRITON_INTERPRET) whether the kernels
# run on the CPU interpreter; read that decision back from a decorated kernel.
_INTERPRET = _jit_mode(_fwd_kernel) == "interpreted"
# tl.cdiv & co. were decorated when triton was first imported; a mix of
# interpreted and compiled functions cannot run.
_STDLIB_MODE = _jit_mode(getattr(tl, "cdiv", None))
if _STDLIB_MODE is not None and _STDLIB_MODE != _jit_mode(_fwd_kernel):
    raise ImportError(
        f"TRITON_INTERPRET changed after triton was imported (triton is {_STDLIB_MODE}, these kernels "
        f"would be {_jit_mode(_fwd_kernel)}); set TRITON_INTERPRET before triton is first imported."
    )

_PREPROCESS_BLOCK_T = 32 if _INTERPRET else 64
# _span_kernel's tiles: (key granules per program, query granules per step)
_SPAN_TILE = (16, 16) if _INTERPRET else (64, 64)
_fwd = Launcher(_fwd_kernel, "fwd", _INTERPRET)
_bwd_dkdv = Launcher(_bwd_dkdv_kernel, "dkdv", _INTERPRET)
_bwd_dq = Launcher(_bwd_dq_kernel, "dq", _INTERPRET)
_LAUNCHERS = {"fwd": _fwd, "dkdv": _bwd_dkdv, "dq": _bwd_dq}


def block_sizes(kind: str, dtype: torch.dtype) -> dict[str, int] | None:
    """``{"BLOCK_M": .., "BLOCK_N": ..}`` of the last launch of kernel ``kind`` ("fwd", "dkdv",
    "dq") for ``dtype``'s config family: the autotuner's choice on a GPU (None before the first
    launch), the fixed interpreter config on a CPU.  For FLOP accounting and tests."""
    return _LAUNCHERS[kind].block_sizes(dtype)


def _block_d(head_dim):
    return max(16, triton.next_power_of_2(head_dim))


def _flags(dtype, head_dim, window, counts, linear_bias):
    """The constexprs shared by the three main kernels."""
    interp_bf16 = _INTERPRET and dtype == torch.bfloat16
    block_d = _block_d(head_dim)
    return dict(BLOCK_D=block_d, UPCAST=interp_bf16, ROUND_BF16=interp_bf16,
                IEEE=dtype == torch.float32 or interp_bf16, EVEN_D=head_dim == block_d,
                WINDOW=window, COUNT=counts is not None, LINEAR_BIAS=linear_bias)


def _flat_grid(num_heads, batch, max_seqlen, block_key):
    def grid(meta):
        return (triton.cdiv(max_seqlen, meta[block_key]) * num_heads * batch,)

    return grid


def grid_size(kind, heads, batch, max_seqlen, block_m, block_n):
    """Programs launched by kernel ``kind`` ("fwd", "dkdv", "dq"): the size of a counts buffer."""
    return triton.cdiv(max_seqlen, block_n if kind == "dkdv" else block_m) * heads * batch


# --------------------------------------------------------------------------
# Host-side forward / backward (inputs assumed validated)
# --------------------------------------------------------------------------


def _flash_attn_forward(q, k, v, cu_seqlens, max_seqlen, alibi_slopes, softmax_scale,
                        out=None, lse=None, reach=None, counts=None, linear_bias=True):
    """Run the forward kernel.  Returns ``(out, lse2)``.

    ``q, k, v``: (T, H, D) with last-dim stride 1; ``cu_seqlens`` int32
    contiguous; ``alibi_slopes`` float32 contiguous (H,).  ``out`` (T, H, D) in
    the input dtype and ``lse`` float32 (H, T) contiguous may be supplied (the
    tests pass NaN-filled buffers to catch unwritten elements).  ``lse2`` is the
    base-2 log-sum-exp of the scaled, biased scores.  ``reach``: int32 (H, T)
    from :func:`windowing.key_reach` to skip key blocks of zero weight, None for
    none.  ``counts``: an int32 buffer of :func:`grid_size` elements receiving
    the number of key blocks each program visited (zeros for programs past the
    end of their sequence must be there beforehand).  ``linear_bias`` False computes
    ``|i - j|`` on every tile (the exact-bias path the tests compare against).
    """
    total, heads, head_dim = q.shape
    batch = cu_seqlens.numel() - 1
    if out is None:
        out = torch.empty((total, heads, head_dim), dtype=q.dtype, device=q.device)
    if lse is None:
        lse = torch.empty((heads, total), dtype=torch.float32, device=q.device)
    if total == 0 or max_seqlen == 0:
        return out, lse
    window = reach is not None
    reach = reach if window else cu_seqlens  # never read without windowing
    _fwd(
        _flat_grid(heads, batch, max_seqlen, "BLOCK_M"), q.dtype,
        q, k, v, out, lse, cu_seqlens, alibi_slopes, reach, counts if counts is not None else lse,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        out.stride(0), out.stride(1), lse.stride(0), reach.stride(0),
        heads, max_seqlen, head_dim, softmax_scale * math.log2(math.e), seq_bucket(max_seqlen),
        **_flags(q.dtype, head_dim, window, counts, linear_bias),
    )
    return out, lse


def window_reach(q, k, v, alibi_slopes, softmax_scale):
    """The per-query reach of :func:`windowing.key_reach`, computed on the device by two small
    kernels (no eager operators: one zero-filled (heads,) buffer, one output).

    Args:
        q, k, v: (T, H, D) with last-dim stride 1; ``alibi_slopes`` float32 contiguous (H,);
            ``softmax_scale`` a python float.
    Returns:
        (H, T) int32 contiguous.  Equal to ``key_reach`` up to float32 rounding of the norms
        (a value may differ by one token; both are bounds).
    """
    total, heads, head_dim = q.shape
    reach = torch.empty((heads, total), dtype=torch.int32, device=q.device)
    if total == 0:
        return reach
    k_max = torch.zeros(heads, dtype=torch.int32, device=q.device)
    grid = (triton.cdiv(total, _PREPROCESS_BLOCK_T), heads)
    block_d = _block_d(head_dim)
    _key_bound_kernel[grid](k, v, k_max, k.stride(0), k.stride(1), v.stride(0), v.stride(1),
                            total, head_dim, BLOCK_T=_PREPROCESS_BLOCK_T, BLOCK_D=block_d,
                            **COMPILE_OPTIONS)
    qk_scale = softmax_scale * math.log2(math.e)
    _reach_kernel[grid](q, k, alibi_slopes, k_max, reach, q.stride(0), q.stride(1), k.stride(0),
                        k.stride(1), reach.stride(0), total, head_dim, qk_scale, abs(qk_scale),
                        BLOCK_T=_PREPROCESS_BLOCK_T, BLOCK_D=block_d, **COMPILE_OPTIONS)
    return reach


def query_spans(reach, cu_seqlens, max_seqlen):
    """The dK/dV kernel's query span of every key granule, computed once per head by
    :func:`_span_kernel` (one output buffer, one launch).

    Args:
        reach: (H, T) int32 contiguous, from :func:`window_reach` or ``windowing.key_reach``;
            ``cu_seqlens`` int32 contiguous (batch + 1,); ``max_seqlen`` a python int.
    Returns:
        (2, H, T) int32, for key granule ``g`` of the sequence starting at token ``s`` (positions
        relative to the sequence): ``[0, h, s + g]`` the first token of the first 16-query
        granule holding a query whose reach covers one of its keys, ``[1, h, s + g]`` the last
        token of the last such granule. The entries past a sequence's ``ceil(length / 16)``
        granules are not written.
    """
    heads, total = reach.shape
    batch = cu_seqlens.numel() - 1
    span = torch.empty((2, heads, total), dtype=torch.int32, device=reach.device)
    if total == 0 or max_seqlen == 0:
        return span
    block_g, chunk_q = _SPAN_TILE
    grid = (triton.cdiv(max_seqlen, block_g * _SPAN_GRANULE) * heads * batch,)
    _span_kernel[grid](cu_seqlens, reach, span, reach.stride(0), span.stride(0), span.stride(1),
                       heads, max_seqlen, BLOCK_G=block_g, CHUNK_Q=chunk_q, **COMPILE_OPTIONS)
    return span


def _flash_attn_backward(do, q, k, v, out, lse, cu_seqlens, max_seqlen, alibi_slopes,
                         softmax_scale, dq=None, dk=None, dv=None, reach=None,
                         dkdv_counts=None, dq_counts=None, linear_bias=True, dslope_rows=None):
    """Run the backward kernels.  Returns ``(dq, dk, dv)`` in the input dtype.

    ``do`` must have the shape/dtype of ``out`` and last-dim stride 1; ``lse``
    is the float32 (H, T) tensor returned by :func:`_flash_attn_forward`.
    ``dq``/``dk``/``dv`` buffers, ``reach`` and the two kernels' ``counts``
    buffers may be supplied (see the forward).  A head whose ``do`` holds a
    non-finite value skips nothing (``0 * inf`` would not vanish): the preprocessing kernel
    flags it.  ``dslope_rows``, a float32 (H, T) buffer like ``lse``, asks the dQ kernel for the
    slopes' gradient by query row: ``dslope_rows[h, i] = -sum_j dS_hij |i - j|``, whose sum over
    the rows is the gradient of slope ``h``.
    """
    total, heads, head_dim = q.shape
    batch = cu_seqlens.numel() - 1
    dq = torch.empty((total, heads, head_dim), dtype=q.dtype, device=q.device) if dq is None else dq
    dk = torch.empty((total, heads, head_dim), dtype=q.dtype, device=q.device) if dk is None else dk
    dv = torch.empty((total, heads, head_dim), dtype=q.dtype, device=q.device) if dv is None else dv
    if total == 0 or max_seqlen == 0:
        return dq, dk, dv
    block_d = _block_d(head_dim)
    qk_scale = softmax_scale * math.log2(math.e)
    window = reach is not None
    span = query_spans(reach, cu_seqlens, max_seqlen) if window else cu_seqlens[None, None]
    reach = reach if window else cu_seqlens  # never read without windowing
    do_nonfinite = torch.zeros(heads, dtype=torch.int32, device=q.device) if window else cu_seqlens

    delta = torch.empty_like(lse)
    _bwd_preprocess_kernel[(triton.cdiv(total, _PREPROCESS_BLOCK_T), heads)](
        out, do, delta, do_nonfinite,
        out.stride(0), out.stride(1), do.stride(0), do.stride(1), delta.stride(0),
        total, head_dim,
        BLOCK_T=_PREPROCESS_BLOCK_T, BLOCK_D=block_d, WINDOW=window, **COMPILE_OPTIONS,
    )
    common = (heads, max_seqlen, head_dim, qk_scale, softmax_scale, seq_bucket(max_seqlen))
    _bwd_dkdv(
        _flat_grid(heads, batch, max_seqlen, "BLOCK_N"), q.dtype,
        q, k, v, do, lse, delta, dk, dv, cu_seqlens, alibi_slopes, span, do_nonfinite,
        dkdv_counts if dkdv_counts is not None else lse,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        do.stride(0), do.stride(1), dk.stride(0), dk.stride(1), dv.stride(0), dv.stride(1),
        lse.stride(0), span.stride(0), span.stride(1), *common,
        **_flags(q.dtype, head_dim, window, dkdv_counts, linear_bias),
    )
    _bwd_dq(
        _flat_grid(heads, batch, max_seqlen, "BLOCK_M"), q.dtype,
        q, k, v, do, lse, delta, dq, dslope_rows if dslope_rows is not None else lse,
        cu_seqlens, alibi_slopes, reach, do_nonfinite,
        dq_counts if dq_counts is not None else lse,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        do.stride(0), do.stride(1), dq.stride(0), dq.stride(1),
        lse.stride(0), reach.stride(0), *common,
        **_flags(q.dtype, head_dim, window, dq_counts, linear_bias),
        SLOPE_GRAD=dslope_rows is not None,
    )
    return dq, dk, dv


class _FlashAttnVarlenALiBi(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, cu_seqlens, max_seqlen, alibi_slopes, softmax_scale, window):
        reach = window_reach(q, k, v, alibi_slopes, softmax_scale) if window else None
        out, lse = _flash_attn_forward(q, k, v, cu_seqlens, max_seqlen, alibi_slopes, softmax_scale,
                                       reach=reach)
        ctx.save_for_backward(q, k, v, out, lse, cu_seqlens, alibi_slopes, reach)
        ctx.max_seqlen = max_seqlen
        ctx.softmax_scale = softmax_scale
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, out, lse, cu_seqlens, alibi_slopes, reach = ctx.saved_tensors
        dout = _kernel_operand(dout.to(out.dtype))
        dslope_rows = torch.empty_like(lse) if ctx.needs_input_grad[5] else None
        dq, dk, dv = _flash_attn_backward(
            dout, q, k, v, out, lse, cu_seqlens, ctx.max_seqlen, alibi_slopes, ctx.softmax_scale,
            reach=reach, dslope_rows=dslope_rows,
        )
        dslopes = None if dslope_rows is None else dslope_rows.sum(dim=1)
        return dq, dk, dv, None, None, dslopes, None, None


# --------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------


def _kernel_operand(t):
    """``t`` itself if its last dim is unit-stride (views are used in place), else a copy."""
    return t if t.stride(-1) == 1 else t.contiguous()


def _validate(q, k, v, cu_seqlens, max_seqlen, alibi_slopes, softmax_scale):
    """Check the arguments without reading any tensor value (no host-device synchronisation).

    Returns ``(max_seqlen, softmax_scale)`` as python numbers.  The values of ``cu_seqlens`` are
    checked by :func:`check_cu_seqlens`, which the public function calls for host tensors only.
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}.")
        if t.dim() != 3:
            raise ValueError(f"{name} must have shape (total_tokens, heads, head_dim), got {tuple(t.shape)}.")
    if not (q.shape == k.shape == v.shape):
        raise ValueError(
            f"q, k and v must have the same shape, got {tuple(q.shape)}, {tuple(k.shape)} and {tuple(v.shape)}."
        )
    if q.dtype not in support.DTYPES:
        raise TypeError(f"q must be float16, bfloat16 or float32, got {q.dtype}.")
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"q, k and v must have the same dtype, got {q.dtype}, {k.dtype} and {v.dtype}.")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k and v must be on the same device, got {q.device}, {k.device} and {v.device}.")
    if q.device.type == "cpu" and not _INTERPRET:
        raise ValueError(
            "q is on the CPU, which needs the Triton interpreter: set TRITON_INTERPRET=1 before importing triton."
        )
    total, heads, head_dim = q.shape
    if head_dim not in support.HEAD_DIMS:
        raise ValueError(f"head_dim (last dim of q) must be in [{support.HEAD_DIMS.start}, "
                         f"{support.HEAD_DIMS.stop - 1}], got {head_dim}.")
    if heads < 1:
        raise ValueError("q must have at least one head.")

    if not isinstance(cu_seqlens, torch.Tensor):
        raise TypeError(f"cu_seqlens must be a torch.Tensor, got {type(cu_seqlens).__name__}.")
    if cu_seqlens.dtype != torch.int32:
        raise TypeError(f"cu_seqlens must be int32, got {cu_seqlens.dtype}.")
    if cu_seqlens.dim() != 1 or cu_seqlens.numel() < 2:
        raise ValueError(f"cu_seqlens must be 1-D with batch + 1 >= 2 entries, got shape {tuple(cu_seqlens.shape)}.")
    if cu_seqlens.device != q.device:
        raise ValueError(f"cu_seqlens must be on the device of q ({q.device}), got {cu_seqlens.device}.")

    if isinstance(max_seqlen, bool):
        raise TypeError("max_seqlen must be an int, got bool.")
    if isinstance(max_seqlen, torch.Tensor) and max_seqlen.device.type != "cpu":
        raise TypeError("max_seqlen must be a python int: reading a device tensor would synchronise.")
    try:
        max_seqlen = operator.index(max_seqlen)
    except TypeError:
        raise TypeError(f"max_seqlen must be an int, got {type(max_seqlen).__name__}.") from None
    if max_seqlen < 0:
        raise ValueError(f"max_seqlen must be non-negative, got {max_seqlen}.")

    if not isinstance(alibi_slopes, torch.Tensor):
        raise TypeError(f"alibi_slopes must be a torch.Tensor, got {type(alibi_slopes).__name__}.")
    if alibi_slopes.dtype != torch.float32:
        raise TypeError(f"alibi_slopes must be float32, got {alibi_slopes.dtype}.")
    if tuple(alibi_slopes.shape) != (heads,):
        raise ValueError(
            f"alibi_slopes must have shape ({heads},) (one slope per head), got {tuple(alibi_slopes.shape)}."
        )
    if alibi_slopes.device != q.device:
        raise ValueError(f"alibi_slopes must be on the device of q ({q.device}), got {alibi_slopes.device}.")

    if softmax_scale is None:
        softmax_scale = 1.0 / math.sqrt(head_dim)
    elif isinstance(softmax_scale, bool) or not isinstance(softmax_scale, (int, float)):
        raise TypeError(f"softmax_scale must be a float or None, got {type(softmax_scale).__name__}.")
    softmax_scale = float(softmax_scale)
    if not math.isfinite(softmax_scale):
        raise ValueError(f"softmax_scale must be finite, got {softmax_scale}.")
    return max_seqlen, softmax_scale


def check_cu_seqlens(cu_seqlens, total_tokens, max_seqlen):
    """Check the values of ``cu_seqlens`` (reads them: one device-to-host copy).

    Args:
        cu_seqlens: int32 (batch + 1,) sequence offsets.
        total_tokens: the packed token count (``q.shape[0]``).
        max_seqlen: the bound passed to :func:`flash_attn_varlen_alibi`.
    Raises:
        ValueError: if the offsets do not start at 0, decrease, do not end at
            ``total_tokens``, or a sequence is longer than ``max_seqlen``.
    """
    bounds = cu_seqlens.tolist()
    lengths = [end - start for start, end in zip(bounds[:-1], bounds[1:])]
    if bounds[0] != 0:
        raise ValueError(f"cu_seqlens must start at 0, got {bounds[0]}.")
    if min(lengths) < 0:
        raise ValueError("cu_seqlens must be non-decreasing.")
    if bounds[-1] != total_tokens:
        raise ValueError(f"cu_seqlens must end at total_tokens = q.shape[0] = {total_tokens}, got {bounds[-1]}.")
    if max(lengths) > max_seqlen:
        raise ValueError(f"max_seqlen ({max_seqlen}) is smaller than the longest sequence ({max(lengths)}).")


WINDOW_ALWAYS = "always"


def flash_attn_varlen_alibi(q, k, v, cu_seqlens, max_seqlen, alibi_slopes, softmax_scale=None,
                            window=True):
    """Bidirectional attention with ALiBi over packed variable-length sequences.

    Args:
        q, k, v: (total_tokens, heads, head_dim) tensors of one dtype (float16,
            bfloat16 or float32) on one device; 16 <= head_dim <= 128.  Strided
            views (e.g. ``qkv.view(T, 3, H, d).unbind(1)``) are used without a
            copy as long as the last dim has stride 1.
        cu_seqlens: int32 (batch + 1,) cumulative sequence offsets, starting at
            0, non-decreasing (empty sequences allowed), ending at total_tokens.
            Values are checked (:func:`check_cu_seqlens`) only for CPU tensors:
            for device tensors that would be a host-device sync, so invalid
            offsets give undefined results there; call it yourself if unsure.
        max_seqlen: python int >= the longest sequence length (sizes the grid).
        alibi_slopes: float32 (heads,).  Query i and key j of the same sequence
            (positions restart at 0 per sequence) get the bias
            ``-slope[h] * |i - j|`` added after the softmax scale; keys of other
            sequences get no weight.  Zero slopes give plain attention.
        softmax_scale: defaults to ``1 / sqrt(head_dim)``.
        window: skip the key blocks whose weights are provably exactly zero in
            float32 (see :mod:`windowing`); the result equals the unskipped one
            within float32 rounding.  True (the default) does so where it can pay:
            when ``max_seqlen`` reaches :func:`windowing.min_paying_length` for the
            head count, else it computes every block and spends nothing on the
            window.  ``"always"`` windows at any length (benchmarks, tests); False
            computes every block.

    Returns:
        (total_tokens, heads, head_dim) contiguous tensor in the input dtype.
        Differentiable with respect to q, k, v and alibi_slopes (learned slopes).
    """
    max_seqlen, softmax_scale = _validate(q, k, v, cu_seqlens, max_seqlen, alibi_slopes, softmax_scale)
    if cu_seqlens.device.type == "cpu":
        # Host memory (the interpreter): reading the offsets costs no device sync, and invalid
        # ones would make the interpreted kernels read out of bounds.
        check_cu_seqlens(cu_seqlens, q.shape[0], max_seqlen)
    if not (isinstance(window, bool) or window == WINDOW_ALWAYS):
        raise TypeError(f"window must be True, False or {WINDOW_ALWAYS!r}, got {window!r}.")
    window = window == WINDOW_ALWAYS or (window and windowing.window_pays(max_seqlen, q.shape[1]))
    q, k, v = _kernel_operand(q), _kernel_operand(k), _kernel_operand(v)
    return _FlashAttnVarlenALiBi.apply(
        q, k, v, cu_seqlens.contiguous(), max_seqlen, alibi_slopes.contiguous(), softmax_scale, window
    )
