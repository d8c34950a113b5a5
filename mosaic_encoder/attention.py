"""Variable-length multi-head attention with ALiBi over packed sequences.

All implementations share one signature: packed ``q, k, v`` of shape (T, heads, head_dim), the
sequence boundaries ``cu_seqlens`` and the ALiBi slopes; they return (T, heads, head_dim) in the
input dtype. Tokens attend only within their own sequence.

``"sdpa"`` is plain PyTorch: sequences of equal length are batched together and queries are
processed in chunks, so no tensor larger than ``max_score_elements`` scores exists at once and
memory grows linearly with the sequence length (in training too: each chunk's scores are
recomputed for the backward pass rather than stored). The ALiBi bias is never built: each chunk's
bias is a strided view of one (heads, 2L - 1) table of per-offset values, added to the scores in
float32 for every input dtype (rounding a bias of -1000 to bfloat16 would move it by 4). With
ALiBi, a chunk is two matrix products around a float32 softmax: on CPU this is about twice as
fast as ``scaled_dot_product_attention`` with a float mask, whose masked path is slow. Without a
bias (classic BERT, RoPE) ``scaled_dot_product_attention`` runs unmasked. ``"triton"`` is the
fused kernel in the ``kernels`` package.

The implementations form a registry (:data:`IMPLEMENTATIONS`), each declaring what it supports
(dtypes, head sizes, dropout, a gradient for learned slopes); :func:`varlen_attention` checks a
call against it before running, so a missing capability is an error naming the implementation.
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from dataclasses import dataclass
from functools import partial
from typing import Callable, Iterator, NamedTuple

import torch
import torch.nn.functional as F
from einops import rearrange
from torch.utils.checkpoint import checkpoint

from mosaic_kernels import support as kernel_support

from .alibi import alibi_bias, alibi_bias_view, alibi_offset_table
from .attention_names import ATTENTION_IMPLS
from .errors import ConfigError

# 32 MiB of float32 scores per step: small enough to stay near the caches (128 query rows of a
# 4096-token sequence for 12 heads gave the best CPU times), large enough to batch short sequences.
DEFAULT_MAX_SCORE_ELEMENTS = 1 << 23


class HeadGroup(NamedTuple):
    """Heads at positions ``[first, stop)`` of the computation order attend to keys ``[lo, hi)``."""

    first: int
    stop: int
    lo: int
    hi: int


class Chunk(NamedTuple):
    """Query rows ``[row, row + rows)`` of a step, and the head groups that compute them."""

    row: int
    rows: int
    groups: list[HeadGroup]


class Step(NamedTuple):
    """Sequences of one length computed together: ``idx`` (n, length) their token indices."""

    length: int
    idx: torch.Tensor
    chunks: list[Chunk]


def sdpa_varlen_alibi(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor,
                      alibi_slopes: torch.Tensor | None, softmax_scale: float | None = None,
                      dropout_p: float = 0.0,
                      max_score_elements: int = DEFAULT_MAX_SCORE_ELEMENTS,
                      window: bool = True) -> torch.Tensor:
    """Plain-PyTorch variable-length ALiBi attention.

    Args:
        q, k, v: (T, heads, head_dim), any float dtype.
        cu_seqlens: (B + 1,) int32 sequence starts in the packed tokens.
        alibi_slopes: (heads,) float32, or None for no bias (classic BERT).
        max_score_elements: bound on batch x heads x query rows x keys computed in one step.
        window: with ALiBi, skip per head the keys of each query chunk whose softmax weight is
            provably exactly zero in float32 (the bound of ``kernels.windowing``); the result
            equals the unskipped one within float32 rounding.
    Returns:
        (T, heads, head_dim) in q's dtype.
    """
    heads = q.shape[1]
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(q.shape[-1])
    differentiable = dropout_p > 0 or (torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (q, k, v, alibi_slopes)))
    out = torch.empty_like(q)
    order = _head_order(alibi_slopes, window, q.shape[0])
    table_length = None
    for step in _plan(q, k, v, cu_seqlens, alibi_slopes, scale, max_score_elements, order):
        length, idx = step.length, step.idx
        if length != table_length:  # the plan's steps of one length come together
            table_length = length
            table = None if alibi_slopes is None else alibi_offset_table(
                alibi_slopes if order is None else alibi_slopes[order], length)
            if table is not None and differentiable:
                # Each chunk's scores are recomputed in the backward pass instead of kept:
                # training activations then grow linearly with the sequence length, not with
                # its square.
                attend = partial(checkpoint, partial(_biased_attention, scale=scale,
                                                     dropout_p=dropout_p), use_reentrant=False)
            elif table is not None:
                steps = idx.shape[0] * heads * step.chunks[0].rows * length
                attend = _BufferedAttention(scale, steps, q.dtype, q.device)
        # Heads in the plan's order, contiguous so that no matrix product below copies its
        # operands again for every chunk.
        qs, ks, vs = (rearrange(t[idx] if order is None else t[idx][:, :, order],
                                "n l h d -> n h l d").contiguous() for t in (q, k, v))
        for row, rows, groups in step.chunks:
            if table is None:
                chunk = F.scaled_dot_product_attention(qs[:, :, row:row + rows], ks, vs,
                                                       dropout_p=dropout_p, scale=scale)
            else:
                # Query rows run backwards so the bias is a free strided view of `table`.
                bias = alibi_bias_view(table, length, row, rows)
                query = qs[:, :, row:row + rows].flip(2)
                chunk = torch.cat([
                    attend(query[:, g.first:g.stop], ks[:, g.first:g.stop, g.lo:g.hi],
                           vs[:, g.first:g.stop, g.lo:g.hi], bias[g.first:g.stop, :, g.lo:g.hi])
                    for g in groups], dim=1).flip(2)
            if order is not None:
                chunk = chunk[:, _inverse(order)]
            out[idx[:, row:row + rows]] = rearrange(chunk, "n h m d -> n m h d")
    return out


def sdpa_visited_pairs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                       cu_seqlens: torch.Tensor, alibi_slopes: torch.Tensor | None,
                       softmax_scale: float | None = None,
                       max_score_elements: int = DEFAULT_MAX_SCORE_ELEMENTS,
                       window: bool = True) -> int:
    """(query, key) pairs, summed over heads, whose scores :func:`sdpa_varlen_alibi` computes
    for these arguments: its own plan, so with windowing the keys it really skips.

    Without windowing (or ALiBi) that is ``heads * sum(L_i ** 2)``. Reads tensor values on the
    host (for benchmarks and tests, not for a hot path).
    """
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(q.shape[-1])
    order = _head_order(alibi_slopes, window, q.shape[0])
    return sum(step.idx.shape[0] * chunk.rows * sum((g.stop - g.first) * (g.hi - g.lo)
                                                    for g in chunk.groups)
               for step in _plan(q, k, v, cu_seqlens, alibi_slopes, scale, max_score_elements,
                                 order)
               for chunk in step.chunks)


def _head_order(alibi_slopes: torch.Tensor | None, window: bool, tokens: int
                ) -> list[int] | None:
    """The order heads are computed in when windowing (else None): by slope, steepest first.

    Steep heads reach few keys: sorted, heads of similar reach are neighbours, so a query chunk
    can run them as contiguous slices (views, batched products) over one narrower key range.
    """
    if not window or alibi_slopes is None or not tokens:
        return None
    slopes = alibi_slopes.tolist()  # (heads,) on the host: this is the CPU path
    return sorted(range(len(slopes)), key=lambda h: (-slopes[h], h))


def _inverse(order: list[int]) -> list[int]:
    inverse = [0] * len(order)
    for position, head in enumerate(order):
        inverse[head] = position
    return inverse


def _plan(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor,
          alibi_slopes: torch.Tensor | None, scale: float, max_score_elements: int,
          order: list[int] | None) -> Iterator[Step]:
    """The steps of :func:`sdpa_varlen_alibi`, grouped by sequence length.

    Each chunk's head groups cover every key unless exact ALiBi windowing, with ``order`` sorted
    by slope, proves the others have zero weight (``order`` None: no windowing, heads in their
    own order). The first step of a length has the most sequences and the longest chunk.
    """
    heads = q.shape[1]
    reach = None
    if order is not None:
        from mosaic_kernels.windowing import key_reach
        reach = key_reach(q.detach(), k.detach(), v.detach(), alibi_slopes.detach(),
                          scale)[order]
    starts_by_length: dict[int, list[int]] = defaultdict(list)
    for start, length in zip(cu_seqlens[:-1].tolist(), cu_seqlens.diff().tolist()):
        if length:
            starts_by_length[length].append(start)
    for length, starts in starts_by_length.items():
        index = rearrange(torch.tensor(starts, device=q.device), "n -> n 1") + \
            torch.arange(length, device=q.device)
        per_sequence = heads * length * length
        seqs_per_step = max(1, max_score_elements // per_sequence)
        rows_per_step = length if per_sequence <= max_score_elements else \
            max(1, max_score_elements // (heads * length))
        for first in range(0, len(starts), seqs_per_step):
            idx = index[first:first + seqs_per_step]
            windows = None if reach is None else _key_windows(reach, idx, rows_per_step)
            chunks = []
            for chunk_index, row in enumerate(range(0, length, rows_per_step)):
                rows = min(rows_per_step, length - row)
                ranges = [(0, length)] * heads if windows is None else \
                    [_key_range(windows[h][chunk_index], row, rows, length) for h in range(heads)]
                chunks.append(Chunk(row, rows, _head_groups(ranges, length)))
            yield Step(length, idx, chunks)


def _head_groups(ranges: list[tuple[int, int]], length: int) -> list[HeadGroup]:
    """Split heads (in computation order) into contiguous groups sharing one key range.

    ranges: per head, the keys ``(lo, hi)`` it needs, out of ``length``. A group runs its heads
    over the union of their ranges; it costs its heads, plus one for the call, times that width,
    and a group narrower than the sequence three times as much: on the 2-core CPU this was tuned
    on, the products and bias additions of narrow key ranges ran 2-3x slower per score than one
    batched product over every key. Dynamic programming over the split points picks the cheapest
    grouping; without windowing it is one group of every head.
    """
    heads = len(ranges)

    def group(first: int, stop: int) -> HeadGroup:
        return HeadGroup(first, stop, min(lo for lo, _ in ranges[first:stop]),
                         max(hi for _, hi in ranges[first:stop]))

    def cost(first: int, stop: int) -> int:
        chosen = group(first, stop)
        width = chosen.hi - chosen.lo
        return (stop - first + 1) * width * (1 if width == length else 3)

    best = [0] + [None] * heads  # best[h]: cheapest cost of heads [0, h), and its last split
    split = [0] * (heads + 1)
    for stop in range(1, heads + 1):
        best[stop], split[stop] = min((best[first] + cost(first, stop), first)
                                      for first in range(stop))
    groups = []
    stop = heads
    while stop:
        groups.append(group(split[stop], stop))
        stop = split[stop]
    return groups[::-1]


def _key_windows(reach: torch.Tensor, idx: torch.Tensor, rows_per_step: int) -> list[list[int]]:
    """Per head, per query chunk: the largest reach of the chunk's rows over the step's sequences.

    reach: (heads, T) int32; idx: (n, L) token indices. One host read per step.
    """
    per_token = reach[:, idx].amax(dim=1).to(torch.int64)  # (heads, L)
    padded = F.pad(per_token, (0, (-per_token.shape[1]) % rows_per_step))
    return rearrange(padded, "h (c m) -> h c m", m=rows_per_step).amax(dim=2).tolist()


def _key_range(reach: int, row: int, rows: int, length: int) -> tuple[int, int]:
    """Keys ``[lo, hi)`` within ``reach`` of the query rows ``[row, row + rows)``."""
    return max(0, row - reach), min(length, row + rows + reach)


def _biased_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor, *,
                      scale: float, dropout_p: float) -> torch.Tensor:
    """softmax(scale * q k^T + bias) v with the bias and softmax in float32.

    q: (n, heads, m, d); k, v: (n, heads, L, d); bias: (heads, m, L) float32 -> (n, heads, m, d).
    """
    # In place on the (n, heads, m, L) scores: an out-of-place add would follow the bias view's
    # overlapping strides and write the result in a cache-hostile order.
    scores = torch.matmul(q, k.transpose(-1, -2)).to(torch.float32)
    scores.mul_(scale).add_(bias)
    probs = torch.softmax(scores, dim=-1)
    if dropout_p:
        probs = F.dropout(probs, dropout_p)
    return torch.matmul(probs.to(v.dtype), v)


class _BufferedAttention:
    """:func:`_biased_attention` for inference, reusing two score buffers across chunks.

    Allocating fresh (n, heads, m, L) scores per chunk made the C allocator hand memory back to
    the OS and take it again every time: millions of page faults, a third of the run time of a
    4096-token CPU forward. The buffers hold the largest chunk; smaller ones use a prefix.
    """

    def __init__(self, scale: float, elements: int, dtype: torch.dtype, device: torch.device):
        self.scale = scale
        self.scores = torch.empty(elements, dtype=torch.float32, device=device)
        # Products in the input dtype land here, then the probabilities cast back for P V.
        self.low = None if dtype == torch.float32 else torch.empty(elements, dtype=dtype,
                                                                   device=device)

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                 bias: torch.Tensor) -> torch.Tensor:
        shape = (*q.shape[:3], k.shape[2])  # (n, heads, m, L): a contiguous prefix of the buffers
        size = math.prod(shape)
        scores = self.scores[:size].view(shape)
        product = scores if self.low is None else self.low[:size].view(shape)
        torch.matmul(q, k.transpose(-1, -2), out=product)
        if product is not scores:
            scores.copy_(product)
        scores.mul_(self.scale).add_(bias)
        torch.ops.aten._softmax.out(scores, -1, False, out=scores)  # in place, float32
        if product is not scores:
            product.copy_(scores)
        return torch.matmul(product, v)


def padded_rows_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                          cu_seqlens: torch.Tensor, row_length: int,
                          alibi_slopes: torch.Tensor | None, softmax_scale: float | None = None,
                          dropout_p: float = 0.0) -> torch.Tensor:
    """Variable-length attention over tokens in rows of ``row_length``, computed row by row.

    The layout of :class:`mosaic_encoder.padding.PaddedRows`: T = rows x ``row_length`` tokens,
    and ``cu_seqlens`` (3 rows + 1,) cuts row r into three sequences at ``cu_seqlens[3r + 1]``
    and ``cu_seqlens[3r + 2]``. Each row is one dense (heads, L, L) score block, with keys of
    other sequences masked out, so every shape follows from q's: this is the path that
    ``torch.compile``, ``torch.export`` and ONNX trace. Scores, bias and softmax are float32 as
    in :func:`sdpa_varlen_alibi`, whose real-token outputs it equals within float32 rounding.

    q, k, v: (T, heads, head_dim) -> (T, heads, head_dim) in q's dtype.
    """
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(q.shape[-1])
    rows = cu_seqlens.shape[0] // 3
    qs, ks, vs = (rearrange(t, "(b l) h d -> b h l d", b=rows, l=row_length) for t in (q, k, v))
    token = rearrange(torch.arange(q.shape[0], device=q.device), "(b l) -> b l", b=rows,
                      l=row_length)
    first, last = (rearrange(cu_seqlens[i::3][:rows], "b -> b 1") for i in (1, 2))
    sequence = (token >= first).to(torch.int8) + (token >= last).to(torch.int8)  # 0, 1, 2 per row
    other = rearrange(sequence, "b i -> b 1 i 1") != rearrange(sequence, "b j -> b 1 1 j")
    scores = torch.matmul(qs, ks.transpose(-1, -2)).to(torch.float32) * scale
    if alibi_slopes is not None:
        position = torch.arange(row_length, device=q.device)
        scores = scores + alibi_bias(alibi_slopes, position, position)
    # Every token belongs to its own sequence, so no row of scores is masked entirely.
    probs = torch.softmax(scores.masked_fill(other, float("-inf")), dim=-1)
    if dropout_p:
        probs = F.dropout(probs, dropout_p)
    return rearrange(torch.matmul(probs.to(vs.dtype), vs), "b h l d -> (b l) h d")


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor,
          max_seqlen: int, alibi_slopes: torch.Tensor | None, dropout_p: float,
          window: bool) -> torch.Tensor:
    if torch.compiler.is_compiling():
        return padded_rows_attention(q, k, v, cu_seqlens, max_seqlen, alibi_slopes,
                                     dropout_p=dropout_p)
    return sdpa_varlen_alibi(q, k, v, cu_seqlens, alibi_slopes, dropout_p=dropout_p, window=window)


def _triton(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor,
            max_seqlen: int, alibi_slopes: torch.Tensor | None, dropout_p: float,
            window: bool) -> torch.Tensor:
    try:
        from mosaic_kernels.custom_op import flash_attn_varlen_alibi_op
        from mosaic_kernels.flash_attn import flash_attn_varlen_alibi
    except ImportError as err:
        raise ConfigError(f"attention implementation 'triton' is unavailable ({err}).") from None
    if alibi_slopes is None:  # no ALiBi: the kernel's bias vanishes with zero slopes
        window = False
        alibi_slopes = torch.zeros(q.shape[1], dtype=torch.float32, device=q.device)
    if torch.compiler.is_compiling():
        return flash_attn_varlen_alibi_op(q, k, v, cu_seqlens, max_seqlen, alibi_slopes,
                                          window=window)
    if q.shape[0] == 0:  # no token at all (empty rows only): nothing to launch
        return q.clone()
    return flash_attn_varlen_alibi(q, k, v, cu_seqlens, max_seqlen, alibi_slopes, window=window)


def _triton_unavailable(device: torch.device) -> str | None:
    if device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        return "needs CUDA tensors, or TRITON_INTERPRET=1 set before triton is imported to run " \
               "on the CPU"
    return None


@dataclass(frozen=True)
class AttentionImplementation:
    """One implementation of :func:`varlen_attention` and what it supports, declared, so that
    asking it for anything else is an error naming it and the missing capability, never a
    silent change.

    Attributes:
        name: its ``attention_impl`` value.
        run: ``run(q, k, v, cu_seqlens, max_seqlen, alibi_slopes, dropout_p, window)``.
        dtypes: the input dtypes it computes in.
        head_dims: the head sizes it supports.
        dropout: whether it applies attention-probability dropout in training.
        slope_gradient: whether the ALiBi slopes receive a gradient (learned slopes).
        unavailable: why it cannot run on a device (None: it can).
    """

    name: str
    run: Callable[..., torch.Tensor]
    dtypes: tuple[torch.dtype, ...]
    head_dims: range
    dropout: bool
    slope_gradient: bool
    unavailable: Callable[[torch.device], str | None] = lambda device: None

    def lacks(self, q: torch.Tensor, alibi_slopes: torch.Tensor | None,
              dropout_p: float) -> str | None:
        """What this call asks for that the implementation does not support (a phrase), or
        None."""
        if q.dtype not in self.dtypes:
            return f"{str(q.dtype).removeprefix('torch.')} inputs"
        if q.shape[-1] not in self.head_dims:
            return (f"head size {q.shape[-1]} (it supports {self.head_dims.start} to "
                    f"{self.head_dims.stop - 1})")
        if dropout_p and not self.dropout:
            return ("attention dropout; train with attention_probs_dropout_prob=0 or "
                    "attention_impl='sdpa'")
        if alibi_slopes is not None and alibi_slopes.requires_grad and \
                torch.is_grad_enabled() and not self.slope_gradient:
            return "gradients for learned ALiBi slopes"
        return None

    def check(self, q: torch.Tensor, alibi_slopes: torch.Tensor | None, dropout_p: float) -> None:
        """Raise :class:`ConfigError` when this call asks for what the implementation lacks."""
        lacks = self.lacks(q, alibi_slopes, dropout_p)
        if lacks:
            raise ConfigError(f"attention implementation {self.name!r} does not support {lacks}.")


# The registry of implementations, one per name of attention_names.IMPLEMENTATION_NAMES (which
# the command-line parsers read without importing torch); "auto" picks the first of
# PREFERRED[device type] that can run the call (choose).
IMPLEMENTATIONS: dict[str, AttentionImplementation] = {
    "sdpa": AttentionImplementation(
        "sdpa", _sdpa, dtypes=(torch.float16, torch.bfloat16, torch.float32, torch.float64),
        head_dims=range(1, 1 << 16), dropout=True, slope_gradient=True),
    "triton": AttentionImplementation(
        "triton", _triton, dtypes=kernel_support.DTYPES, head_dims=kernel_support.HEAD_DIMS,
        dropout=False, slope_gradient=True, unavailable=_triton_unavailable),
}
PREFERRED = {"cuda": ("triton", "sdpa")}
DEFAULT_PREFERRED = ("sdpa",)


def resolve_impl(impl: str, device: torch.device) -> str:
    """Turn ``"auto"`` into the implementation preferred on ``device`` (Triton on CUDA, PyTorch
    elsewhere) and check that the choice can run there."""
    if impl == "auto":
        return PREFERRED.get(device.type, DEFAULT_PREFERRED)[0]
    if impl not in IMPLEMENTATIONS:
        raise ConfigError(f"attention implementation must be one of {ATTENTION_IMPLS}, got "
                          f"{impl!r}.")
    reason = IMPLEMENTATIONS[impl].unavailable(device)
    if reason:
        raise ConfigError(f"attention implementation {impl!r} {reason}.")
    return impl


def varlen_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor,
                     max_seqlen: int, alibi_slopes: torch.Tensor | None, impl: str = "auto",
                     dropout_p: float = 0.0, window: bool = True) -> torch.Tensor:
    """Dispatch to the implementation named by ``impl``; never falls back silently.

    Shapes as in :func:`sdpa_varlen_alibi`. ``dropout_p`` is the attention-probability dropout,
    non-zero only in training. ``window``: exact ALiBi windowing (skip keys of provably zero
    weight), in both implementations. The Triton path reads no tensor value on the host
    (``max_seqlen`` is a python int). The implementation is chosen, and checked against its
    declared capabilities, by :func:`choose`.

    Under ``torch.compile`` or ``torch.export`` the tokens must be in the layout of
    :class:`mosaic_encoder.padding.PaddedRows` (the models build it there): ``"sdpa"`` then runs
    :func:`padded_rows_attention`, and ``"triton"`` the kernel as the custom operator
    ``torch.ops.mosaic_kernels.flash_attn_varlen_alibi``, which compiled graphs keep calling.
    """
    implementation = choose(impl, q, alibi_slopes, dropout_p)
    return implementation.run(q, k, v, cu_seqlens, max_seqlen, alibi_slopes, dropout_p, window)


def choose(impl: str, q: torch.Tensor, alibi_slopes: torch.Tensor | None,
           dropout_p: float) -> AttentionImplementation:
    """The implementation that runs this call: ``impl`` itself, checked against its declared
    capabilities, or for ``"auto"`` the first preferred on q's device that supports the call
    (attention dropout in training, or a head size outside the kernel's, fall to ``"sdpa"``)."""
    if impl != "auto":
        implementation = IMPLEMENTATIONS[resolve_impl(impl, q.device)]
        implementation.check(q, alibi_slopes, dropout_p)
        return implementation
    candidates = [IMPLEMENTATIONS[name] for name in PREFERRED.get(q.device.type, DEFAULT_PREFERRED)]
    for implementation in candidates:
        if implementation.unavailable(q.device) is None and \
                implementation.lacks(q, alibi_slopes, dropout_p) is None:
            return implementation
    candidates[-1].check(q, alibi_slopes, dropout_p)  # none fits: the last one says why
    return candidates[-1]
