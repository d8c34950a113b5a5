"""Exact ALiBi windowing in the Triton kernels: the bound, equality with the unskipped kernels, and
the block-visit accounting (interpreted on CPU, compiled on a GPU)."""

import math
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is first imported

import pytest  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from mosaic_kernels import flash_attn as fa  # noqa: E402
from mosaic_kernels.windowing import (UNBOUNDED, executed_forward_flops, key_reach,  # noqa: E402
                                      min_paying_length, visited_key_blocks,
                                      visited_query_blocks, window_pays)
from mosaic_kernels import windowing  # noqa: E402
from mosaic_encoder.alibi import alibi_bias, alibi_slopes  # noqa: E402
from mosaic_kernels.reference import attention as reference_attention  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def cu_seqlens_of(lengths):
    return torch.tensor([0, *lengths], dtype=torch.int32).cumsum(0, dtype=torch.int32).to(DEVICE)


def random_qkv(total, heads, head_dim, seed, gain=1.0):
    gen = torch.Generator().manual_seed(seed)
    q, k, v, dout = (torch.randn(total, heads, head_dim, generator=gen) for _ in range(4))
    return [t.to(DEVICE) for t in (q * gain, k * gain, v, dout)]


def run_kernels(q, k, v, dout, cu, max_seqlen, slopes, window, counts=False):
    """Forward and backward kernels, windowed or not; with ``counts``, also the visit counts."""
    scale = 1.0 / math.sqrt(q.shape[-1])
    reach = key_reach(q, k, v, slopes, scale) if window else None
    heads, batch = q.shape[1], cu.numel() - 1
    # Sized for the smallest block any config uses, so it fits whatever the autotuner picks.
    buffers = [torch.zeros(fa.grid_size("fwd", heads, batch, max_seqlen, 16, 16),
                           dtype=torch.int32, device=DEVICE) for _ in range(3)] if counts else [None] * 3
    out, lse = fa._flash_attn_forward(q, k, v, cu, max_seqlen, slopes, scale, reach=reach,
                                      counts=buffers[0])
    grads = fa._flash_attn_backward(dout, q, k, v, out, lse, cu, max_seqlen, slopes, scale,
                                    reach=reach, dkdv_counts=buffers[1], dq_counts=buffers[2])
    result = dict(out=out, lse=lse, dq=grads[0], dk=grads[1], dv=grads[2])
    if counts:
        # The block sizes of these launches (autotuned per window setting on a GPU).
        blocks = [fa.block_sizes(kind, q.dtype) for kind in ("fwd", "dkdv", "dq")]
        result.update(reach=reach, counts=[int(b.sum()) for b in buffers],
                      blocks=[(b["BLOCK_M"], b["BLOCK_N"]) for b in blocks])
    return result


def plan(result, reach, cu, heads):
    """The visit counts the CPU plan predicts for the launches of ``result``."""
    (fm, fn), (km, kn), (qm, qn) = result["blocks"]
    return [visited_key_blocks(reach, cu, heads, fm, fn),
            visited_query_blocks(reach, cu, heads, km, kn),
            visited_key_blocks(reach, cu, heads, qm, qn)]


def assert_same_within_rounding(windowed, full):
    for name in ("out", "lse", "dq", "dk", "dv"):
        torch.testing.assert_close(windowed[name], full[name], rtol=1e-5, atol=2e-6, msg=name)


def _base2_gaps(q, k, cu, slopes, scale):
    """Per sequence: (exact float64 s2_ij - lse2_i, |i - j|), each (heads, L, L)."""
    bounds = cu.tolist()
    for start, end in zip(bounds[:-1], bounds[1:]):
        if end == start:
            continue
        pos = torch.arange(end - start)
        scores = (torch.einsum("ihd,jhd->hij", q[start:end].double(), k[start:end].double()) * scale
                  + alibi_bias(slopes.cpu(), pos, pos).double())
        yield start, (scores - scores.logsumexp(-1, keepdim=True)) / math.log(2), \
            (pos[:, None] - pos[None, :]).abs()


# --------------------------------------------------------------------------
# The bound
# --------------------------------------------------------------------------


@settings(derandomize=True, max_examples=40)
@given(lengths=st.lists(st.integers(1, 120), min_size=1, max_size=3),
       heads=st.integers(1, 3), slope=st.sampled_from([0.05, 0.5, 1.0, 4.0]),
       gain=st.sampled_from([0.1, 1.0, 5.0]), far_gain=st.sampled_from([0.0, 30.0, 300.0]),
       seed=st.integers(0, 2 ** 16))
def test_skipped_keys_have_zero_weight(lengths, heads, slope, gain, far_gain, seed):
    """Every (query, key) pair beyond the reach has an exact weight below 2^-150, adversarial
    inputs included: one key per sequence gets a large norm aligned with the first query."""
    total, head_dim = sum(lengths), 16
    q, k, v, _ = (t.cpu() for t in random_qkv(total, heads, head_dim, seed, gain))
    cu = torch.tensor([0, *lengths], dtype=torch.int32).cumsum(0, dtype=torch.int32)
    for start, length in zip(cu[:-1].tolist(), lengths):
        k[start + length - 1] += far_gain * q[start] / q[start].norm(dim=-1, keepdim=True)
    slopes = torch.full((heads,), slope)
    scale = 1.0 / math.sqrt(head_dim)
    reach = key_reach(q, k, v, slopes, scale)
    assert reach.dtype == torch.int32 and reach.shape == (heads, total)
    assert (reach >= 1).all()
    for start, gap, dist in _base2_gaps(q, k, cu, slopes, scale):
        length = gap.shape[-1]
        skipped = dist[None] > reach[:, start:start + length, None].long()
        assert (gap[skipped] < -150).all()


def test_zero_and_negative_slopes_and_non_finite_values_skip_nothing():
    q, k, v, _ = (t.cpu() for t in random_qkv(64, 4, 16, seed=0))
    slopes = torch.tensor([0.0, -1.0, 2.0, 2.0])
    v[3, 3, 5] = float("inf")  # head 3: a non-finite value is not inert under a zero weight
    reach = key_reach(q, k, v, slopes, 0.25)
    assert (reach[:2] == UNBOUNDED).all() and (reach[3] == UNBOUNDED).all()
    assert (reach[2] < 100).all()
    k[0, 2, 0] = float("nan")
    assert (key_reach(q, k, v.nan_to_num(), slopes, 0.25)[2] == UNBOUNDED).all()


# --------------------------------------------------------------------------
# Kernels: equality with the unskipped kernels, and the visit counts
# --------------------------------------------------------------------------


@settings(derandomize=True, max_examples=5)
@given(lengths=st.lists(st.integers(0, 150), min_size=1, max_size=3).filter(any),
       head_dim=st.sampled_from([16, 40]), slope=st.sampled_from([0.5, 2.0]),
       gain=st.sampled_from([0.5, 3.0]), seed=st.integers(0, 2 ** 16))
def test_windowed_kernels_equal_unskipped(lengths, head_dim, slope, gain, seed):
    cu, total = cu_seqlens_of(lengths), sum(lengths)
    q, k, v, dout = random_qkv(total, 2, head_dim, seed, gain)
    slopes = torch.tensor([slope, slope / 4], device=DEVICE)
    full = run_kernels(q, k, v, dout, cu, max(lengths), slopes, window=False)
    assert_same_within_rounding(run_kernels(q, k, v, dout, cu, max(lengths), slopes, window=True), full)


def test_dominant_far_key_is_not_skipped():
    """A key 230 tokens away whose dot product outweighs its steep bias takes the row: the
    window must keep it, and the output of the first query is then that key's value."""
    length, head_dim = 240, 32
    q, k, v, dout = random_qkv(length, 1, head_dim, seed=5)
    k[230, 0] = 60.0 * q[0, 0]  # scale * q0.k230 ~ 60 * 32 / sqrt(32) = 340 > the bias 1.0 * 230
    cu, slopes = cu_seqlens_of([length]), torch.tensor([1.0], device=DEVICE)
    windowed = run_kernels(q, k, v, dout, cu, length, slopes, window=True, counts=True)
    assert windowed["reach"][0, 0] >= 230
    torch.testing.assert_close(windowed["out"][0].double(), v[230].double(), rtol=0, atol=1e-4)
    oracle = reference_attention(q, k, v, cu, slopes)[0]
    torch.testing.assert_close(windowed["out"].double(), oracle, rtol=1e-5, atol=2e-6)
    assert_same_within_rounding(windowed, run_kernels(q, k, v, dout, cu, length, slopes, False))


def test_visit_counts_match_the_plan_and_skip_work():
    lengths = [260, 3, 0, 130]
    cu, total, heads = cu_seqlens_of(lengths), sum(lengths), 2
    q, k, v, dout = random_qkv(total, heads, 32, seed=11)
    slopes = torch.tensor([2.0, 0.7], device=DEVICE)
    windowed = run_kernels(q, k, v, dout, cu, max(lengths), slopes, window=True, counts=True)
    full = run_kernels(q, k, v, dout, cu, max(lengths), slopes, window=False, counts=True)
    assert windowed["counts"] == plan(windowed, windowed["reach"], cu, heads)
    assert full["counts"] == plan(full, None, cu, heads)
    assert all(w < f for w, f in zip(windowed["counts"], full["counts"]))
    assert_same_within_rounding(windowed, full)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # inf * 0, as expected
def test_non_finite_output_gradient_skips_nothing_in_the_backward():
    lengths = [200]
    cu, heads = cu_seqlens_of(lengths), 1
    q, k, v, dout = random_qkv(200, heads, 16, seed=2)
    dout[3, 0, 1] = float("inf")
    slopes = torch.tensor([2.0], device=DEVICE)
    windowed = run_kernels(q, k, v, dout, cu, 200, slopes, window=True, counts=True)
    full = run_kernels(q, k, v, dout, cu, 200, slopes, window=False, counts=True)
    assert windowed["counts"][0] < plan(windowed, None, cu, heads)[0]
    assert windowed["counts"][1:] == plan(windowed, None, cu, heads)[1:]  # the backward skips nothing
    for name in ("dq", "dk", "dv"):
        torch.testing.assert_close(windowed[name], full[name], rtol=1e-5, atol=2e-6, equal_nan=True)


def test_public_switch():
    """Forced on, automatic (off at these lengths) and off agree; the automatic switch runs no
    pre-pass where windowing cannot pay."""
    lengths = [150, 90]
    cu = cu_seqlens_of(lengths)
    q, k, v, _ = random_qkv(240, 2, 16, seed=4)
    slopes = torch.tensor([1.5, 0.2], device=DEVICE)
    always = fa.flash_attn_varlen_alibi(q, k, v, cu, 150, slopes, window="always")
    off = fa.flash_attn_varlen_alibi(q, k, v, cu, 150, slopes, window=False)
    torch.testing.assert_close(always, off, rtol=1e-5, atol=2e-6)
    assert not window_pays(150, 2)
    assert torch.equal(fa.flash_attn_varlen_alibi(q, k, v, cu, 150, slopes), off)
    with pytest.raises(TypeError, match="window must be True, False or 'always'"):
        fa.flash_attn_varlen_alibi(q, k, v, cu, 150, slopes, window=1)


# --------------------------------------------------------------------------
# The device pre-pass and the automatic switch
# --------------------------------------------------------------------------


def test_device_reach_is_key_reach():
    """The Triton pre-pass computes key_reach's formula: equal up to one token (float32 rounding
    of the norms, in another order), UNBOUNDED in the same places, and itself a valid bound."""
    lengths = [100, 37]
    q, k, v, _ = random_qkv(sum(lengths), 3, 40, seed=8, gain=2.0)
    k[90] += 30.0 * q[0] / q[0].norm(dim=-1, keepdim=True)  # a dominant far key in sequence 0
    slopes = torch.tensor([1.0, 0.0, 0.3], device=DEVICE)
    v[5, 2, 7] = float("nan")  # head 2: skips nothing
    reach = fa.window_reach(q, k, v, slopes, 40 ** -0.5)
    expected = key_reach(q, k, v, slopes, 40 ** -0.5)
    assert reach.dtype == torch.int32 and reach.shape == (3, sum(lengths)) and reach.is_contiguous()
    assert (reach - expected).abs().max() <= 1
    assert (reach[1:] == UNBOUNDED).all() and (reach[0] < UNBOUNDED).all()
    cu = torch.tensor([0, *lengths], dtype=torch.int32).cumsum(0, dtype=torch.int32)
    for start, gap, dist in _base2_gaps(q.cpu(), k.cpu(), cu, slopes.cpu(), 40 ** -0.5):
        length = gap.shape[-1]
        skipped = dist[None] > reach.cpu()[:, start:start + length, None].long()
        assert (gap[skipped] < -150).all()


@settings(max_examples=12, deadline=None)
@given(lengths=st.lists(st.integers(0, 300), min_size=1, max_size=4), heads=st.integers(1, 3),
       max_reach=st.sampled_from([1, 9, 40, 300, UNBOUNDED]), seed=st.integers(0, 2 ** 16))
def test_query_spans_are_each_granules_first_and_last_query(lengths, heads, max_reach, seed):
    """The dK/dV pre-pass, on arbitrary reaches (UNBOUNDED among them) and unaligned packed
    sequences: per key granule, the granules of the first and the last query that may weigh one
    of its keys (``query_span_ends``, a scan on the CPU)."""
    gen = torch.Generator().manual_seed(seed)
    total, granule = sum(lengths), windowing.SPAN_GRANULE
    reach = torch.randint(1, max_reach + 1, (heads, total), generator=gen, dtype=torch.int32)
    reach[torch.rand(heads, total, generator=gen) < 0.02] = UNBOUNDED
    cu = cu_seqlens_of(lengths)
    span = fa.query_spans(reach.to(DEVICE), cu, max(lengths)).cpu()
    assert span.shape == (2, heads, total) and span.dtype == torch.int32
    for start, length in zip(cu.tolist(), lengths):
        if not length:
            continue
        first, last = windowing.query_span_ends(reach[:, start:start + length], length)
        keys = torch.arange(0, length, granule)
        key_last = (keys + granule).clamp(max=length) - 1
        granules = slice(start, start + len(keys))
        assert torch.equal(span[0, :, granules].long(), first[:, keys] // granule * granule)
        assert torch.equal(span[1, :, granules].long(),
                           (last[:, key_last] // granule * granule + granule - 1).clamp(max=length - 1))


def test_query_span_ends_by_brute_force():
    """``query_span_ends`` is the first and last ``i`` with ``|i - j| <= R_i``, for every key."""
    gen = torch.Generator().manual_seed(3)
    reach = torch.randint(1, 30, (2, 97), generator=gen)
    first, last = windowing.query_span_ends(reach, 97)
    pos = torch.arange(97)
    weighs = (pos[None, :, None] - pos[None, None, :]).abs() <= reach[:, :, None]  # [h, i, j]
    index = pos[None, :, None].expand_as(weighs)
    assert torch.equal(first, torch.where(weighs, index, 97).amin(dim=1))
    assert torch.equal(last, torch.where(weighs, index, -1).amax(dim=1))


def test_min_paying_length_is_where_the_saving_passes_the_pre_pass():
    """The threshold of the cost model: the first length (in 128-token steps) whose best-case
    saving exceeds the pre-pass's cost; 64 x 512 stays unwindowed with lodestone's 12 heads,
    4096 tokens are windowed."""
    for heads in (1, 4, 12, 16):
        length = min_paying_length(heads)
        cost = windowing._PREPASS_TILES * heads
        assert windowing._best_case_saved_tiles(length, heads) > cost * length // 128
        assert windowing._best_case_saved_tiles(length - 128, heads) <= cost * (length // 128 - 1)
    assert not window_pays(512, 12) and window_pays(4096, 12) and window_pays(16384, 12)


@pytest.mark.parametrize("length,heads", [(512, 12), (1664, 12), (4096, 3)])
def test_best_case_saving_is_the_plan_at_the_smallest_reach(length, heads):
    """The closed form of the cost model counts what the block plan skips when every query has
    the smallest reach any input gives (a gap of 0): 153 / (slope log2 e), plus one."""
    slopes = 2.0 ** (-8.0 * (torch.arange(heads, dtype=torch.float64) + 1) / heads)
    smallest = torch.floor(153.0 / (slopes / math.log(2))) + 1
    reach = smallest[:, None].expand(heads, length).to(torch.int32)
    cu = torch.tensor([0, length], dtype=torch.int32)
    dense = visited_key_blocks(None, cu, heads, 128, 128)
    saved = dense - visited_key_blocks(reach, cu, heads, 128, 128)
    assert windowing._best_case_saved_tiles(length, heads) == saved


# --------------------------------------------------------------------------
# Work saved at long lengths (counts, computed on the CPU)
# --------------------------------------------------------------------------


@pytest.mark.parametrize("length,at_most", [(4096, 0.60), (16384, 0.35)])
def test_work_saved_with_lodestone_slopes(length, at_most):
    """lodestone's 12 heads (head_dim 64), unit-variance q and k, 128 x 64 forward tiles:
    the fraction of tiles visited, and the dK/dV kernel's, at 4096 and 16384 tokens."""
    heads, head_dim = 12, 64
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(length, heads, head_dim, generator=gen) for _ in range(3))
    cu = torch.tensor([0, length], dtype=torch.int32)
    reach = key_reach(q, k, v, alibi_slopes(heads), head_dim ** -0.5)
    dense = visited_key_blocks(None, cu, heads, 128, 64)
    assert dense == heads * (length // 128) * (length // 64)
    forward = visited_key_blocks(reach, cu, heads, 128, 64)
    backward = visited_query_blocks(reach, cu, heads, 64, 128)
    assert forward <= at_most * dense
    assert backward <= at_most * visited_query_blocks(None, cu, heads, 64, 128)
    credited = 4 * head_dim * heads * length ** 2  # every pair of the sequence, dense
    assert executed_forward_flops(None, cu, heads, head_dim, 128, 64) == credited
    executed = executed_forward_flops(reach, cu, heads, head_dim, 128, 64)
    assert executed <= at_most * credited
    # Partial tiles at the window edges: executed work is the visited tiles' pairs.
    assert executed == pytest.approx(4 * head_dim * 128 * 64 * forward, rel=0.01)
    # The flattest head (slope 2^-8) cannot skip at these lengths: the saving is per head.
    assert (reach[7] >= length).all()
