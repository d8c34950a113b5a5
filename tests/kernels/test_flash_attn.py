"""Tests for mosaic_kernels.flash_attn.flash_attn_varlen_alibi (Triton varlen FlashAttention + ALiBi).

Without a GPU the kernels run on the Triton CPU interpreter, so every case is
small (a few hundred tokens, 1-3 heads).

Accuracy rule (as in the flash-attention test-suite): the float64 oracle
(``mosaic_kernels.reference``) is the truth, and the kernel's max error must be at most twice the max error of a
plain-PyTorch implementation run in the same dtype, plus a floor of
``FLOOR_ULPS`` times a first-order bound of the roundings the algorithm makes
that the plain reference does not (see ``rounding_floors``): the final
rounding of the result to the dtype, the float32 cancellation in
``dP - delta``, and ``delta = rowsum(dO * O)`` being computed from the output
``O`` already rounded to the dtype.  The floor only matters when the plain
reference is (nearly) exact: float32 inputs, or 1-token sequences and nearly
one-hot attention (steep slopes), where the exact dq/dk are (nearly) 0.
"""

import math
import os

import torch

if not torch.cuda.is_available():
    # Must happen before triton is first imported (the session conftest does the same).
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
from hypothesis import example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import triton  # noqa: E402
import triton.language as tl  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402
from triton.runtime import interpreter  # noqa: E402

from mosaic_kernels import flash_attn as fa  # noqa: E402
from mosaic_kernels import tuning  # noqa: E402
from mosaic_kernels import reference  # noqa: E402
from mosaic_kernels.flash_attn import flash_attn_varlen_alibi  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
ALL_DTYPES = [torch.float32, torch.float16, torch.bfloat16]
LOG2E = math.log2(math.e)


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def make_cu_seqlens(lengths, device=DEVICE):
    offsets = [0]
    for n in lengths:
        offsets.append(offsets[-1] + n)
    return torch.tensor(offsets, dtype=torch.int32, device=device), offsets[-1]


def lodestone_slopes(heads):
    """ALiBi slopes as in MosaicBERT for a power-of-two head count: 2^(-8 (h+1) / H)."""
    return torch.tensor([2.0 ** (-8.0 * (h + 1) / heads) for h in range(heads)], dtype=torch.float32)


def max_abs_err(a, b):
    if a.numel() == 0:
        return 0.0
    return (a.double() - b.double()).abs().max().item()


FLOOR_ULPS = 2.0


# The documented gap between the linear (off-diagonal) and the exact bias, in natural units:
# 2^-22 alibi2 (d + 256) in base 2 is 2^-22 slope (d + 256) once divided by log2(e).
LINEAR_BIAS_SCORE = 2.0 ** -22


def rounding_floors(q, k, v, dout, oracle, cu_seqlens, slopes, scale, dtype):
    """First-order bounds of the roundings the kernel makes and the plain reference may not.

    With u = eps / 2 the unit roundoff (u32 for float32), P the oracle probabilities, O the
    oracle output, dP_ij = dO_i . v_j and delta_i = dO_i . O_i:

    * every result is rounded to ``dtype`` at the end: u(dtype) * max|result|
      (added in ``assert_within_rule``);
    * sums the kernel does in float32 in another order than the reference:
      out_i = sum_j P_ij v_j (terms <= max|v|), dv_j = sum_i P_ij dO_i (terms <= max|dO|),
      and the cancellation in dS_ij = P_ij (dP_ij - delta_i) with
      |dP_ij|, |delta_i| <= |dO_i| max|v_j|, so (sum_j P_ij = 1)
      dq_i = scale sum_j dS_ij k_j   ->   eps32 * scale * max|dO_i| |v_j| * max|k|,
      dk_j = scale sum_i dS_ij q_i   ->   the same with max|q|;
    * the probabilities themselves (plus the linear bias's rounding, below).  The kernel forms P_ij = exp2(t_ij - lse2_i) from the
      base-2 score t_ij = log2(e) s_ij and the base-2 log-sum-exp lse2_i, both rounded to
      float32: each carries an absolute error up to u32 times its magnitude, the difference
      adds u32 |t_ij - lse2_i|, and exp2 a few ulps of its result.  Back in natural units the
      exponent is off by at most u32 (|s_ij| + |lse_i| + |s_ij - lse_i|), and exp turns an
      absolute error of the exponent into a relative error of P, so
          |error(P_ij)| <= w_ij = P_ij u32 (|s_ij| + |lse_i| + |s_ij - lse_i| + 2).
      It grows with the magnitude of the scores, not of the result: large scores (q_gain 4)
      and a row dominated by one key make it the largest term.  The plain reference
      computes exp(s_ij - max_i s_i), whose argument is exact for the keys that matter
      (Sterbenz) and small otherwise, so it has no such term.  Propagated linearly:
          out_i: sum_j w_ij max|v_j|                      dv_j: sum_i w_ij max|dO_i|
          dq_i:  scale sum_j w_ij |dP_ij - delta_i| max|k_j|
          dk_j:  scale sum_i w_ij |dP_ij - delta_i| max|q_i|
      and through O into delta_i = dO_i . O_i: |dO_i . sum_j error(P_ij) v_j| <=
      sum_j w_ij |dP_ij|;
    * delta_i uses O as the kernel computed it, rounded to ``dtype``:
      |error(delta_i)| <= e_i = u(dtype) sum_d |dO_id| |O_id| + sum_j w_ij |dP_ij|, hence
      (per head) |error(dq_i)| <= scale * e_i * sum_j P_ij max_d |k_jd| and
      |error(dk_j)| <= scale * sum_i P_ij e_i max_d |q_id|.
    """
    eps32 = torch.finfo(torch.float32).eps
    u32 = eps32 / 2
    unit = torch.finfo(dtype).eps / 2

    def row_norm(t):
        return t.double().norm(dim=-1).max().item() if t.numel() else 0.0

    def amax(t):
        return t.double().abs().max().item() if t.numel() else 0.0

    cancel = eps32 * scale * row_norm(dout) * row_norm(v)
    q64, k64, v64, dout64 = (t.detach().double() for t in (q, k, v, dout))
    out64 = oracle.out
    # Per-token maxima over the head dimension, laid out (H, T) like the scores' rows.
    q_row, k_row, v_row, dout_row = (t.abs().amax(-1).T for t in (q64, k64, v64, dout64))
    delta = (dout64 * out64).sum(-1).T  # (H, T)
    floor = dict.fromkeys(("out", "dv", "dq", "dk"), 0.0)
    for start, end, s in reference.scores(q, k, cu_seqlens, slopes, scale):  # (H, L, L) float64
        lse = torch.logsumexp(s, dim=-1, keepdim=True)
        p = torch.softmax(s, dim=-1)
        w = p * u32 * (s.abs() + lse.abs() + (s - lse).abs() + 2)
        # Off the diagonal the kernel adds a row and a column term for the bias: each score's
        # exponent is off by up to LINEAR_BIAS_SCORE * slope * (|i - j| + 256) more
        # (flash_attn._bias_terms), the lse by at most the P-weighted mean of that.
        length = end - start
        distance = (torch.arange(length)[:, None] - torch.arange(length)[None, :]).abs()
        bias_err = LINEAR_BIAS_SCORE * slopes.double().abs().cpu()[:, None, None] * (distance + 256)
        w = w + p * (bias_err + (p * bias_err).sum(-1, keepdim=True))
        rows = slice(start, end)
        qr, kr, vr, dr = (t[:, rows] for t in (q_row, k_row, v_row, dout_row))
        dp = dout64[rows].transpose(0, 1) @ v64[rows].transpose(0, 1).transpose(-1, -2)
        ds_mag = (dp - delta[:, rows, None]).abs()
        out_p = (w @ vr[..., None])[..., 0]  # (H, L): error of each O_i component from P
        floor["out"] = max(floor["out"], out_p.max().item())
        floor["dv"] = max(floor["dv"], (dr[:, None, :] @ w)[:, 0, :].max().item())
        # delta_i = dO_i . O_i computed from the kernel's O, rounded to dtype.
        e = unit * (dout64[rows].abs() * out64[rows].abs()).sum(-1).T + (w * dp.abs()).sum(-1)
        dq = ((w * ds_mag) @ kr[..., None])[..., 0] + e * (p @ kr[..., None])[..., 0]
        dk = (qr[:, None, :] @ (w * ds_mag))[:, 0, :] + ((e * qr)[:, None, :] @ p)[:, 0, :]
        floor["dq"] = max(floor["dq"], scale * dq.max().item())
        floor["dk"] = max(floor["dk"], scale * dk.max().item())
    return dict(out=eps32 * amax(v) + floor["out"], dv=eps32 * amax(dout) + floor["dv"],
                dq=cancel * amax(k) + floor["dq"], dk=cancel * amax(q) + floor["dk"])


def assert_within_rule(name, ours, ref, oracle, dtype, extra_floor=0.0):
    """max|ours - oracle| <= 2 max|ref - oracle| + FLOOR_ULPS (u(dtype) max|oracle| + extra_floor)."""
    assert ours.shape == oracle.shape, f"{name}: shape {tuple(ours.shape)} != {tuple(oracle.shape)}"
    assert ours.dtype == dtype, f"{name}: dtype {ours.dtype} != {dtype}"
    assert not torch.isnan(ours).any(), f"{name}: NaN (element not written by the kernel?)"
    if ours.numel() == 0:
        return
    err = max_abs_err(ours, oracle)
    err_ref = max_abs_err(ref, oracle)
    floor = FLOOR_ULPS * (torch.finfo(dtype).eps / 2 * oracle.abs().max().item() + extra_floor)
    bound = 2.0 * err_ref + floor
    assert err <= bound, (
        f"{name} ({dtype}): max error {err:.3e} > 2 * plain-PyTorch error {err_ref:.3e} "
        f"+ floor {floor:.3e}"
    )


def random_inputs(total, heads, head_dim, dtype, seed, q_gain=1.0, device=DEVICE):
    gen = torch.Generator().manual_seed(seed)
    q, k, v, dout = (torch.randn(total, heads, head_dim, generator=gen) for _ in range(4))
    q = q * q_gain
    return [t.to(device=device, dtype=dtype) for t in (q, k, v, dout)]


def nan_buffer(shape, dtype, device=DEVICE):
    return torch.full(shape, float("nan"), dtype=dtype, device=device)


def oracle_and_reference(q, k, v, dout, cu_seqlens, slopes, scale):
    """(float64 oracle out/lse/grads, plain reference in q.dtype out/grads, error floors)."""
    oracle = reference.attention_with_grads(q, k, v, dout, cu_seqlens, slopes, scale)
    qr, kr, vr = (t.detach().clone().requires_grad_() for t in (q, k, v))
    out_ref, _ = reference.attention(qr, kr, vr, cu_seqlens, slopes, scale, dtype=q.dtype)
    out_ref.backward(dout)
    ref = dict(out=out_ref.detach(), dq=qr.grad, dk=kr.grad, dv=vr.grad)
    floors = rounding_floors(q, k, v, dout, oracle, cu_seqlens, slopes, scale, q.dtype)
    return oracle._asdict(), ref, floors


def check_internal_kernels(lengths, heads, head_dim, dtype, slopes, seed, q_gain=1.0,
                           softmax_scale=None, extra_max_seqlen=0):
    """Run forward and backward kernels into NaN-poisoned buffers; compare with the oracle."""
    cu_seqlens, total = make_cu_seqlens(lengths)
    max_seqlen = max(lengths) + extra_max_seqlen
    scale = 1.0 / math.sqrt(head_dim) if softmax_scale is None else softmax_scale
    slopes = slopes.to(DEVICE)
    q, k, v, dout = random_inputs(total, heads, head_dim, dtype, seed, q_gain)
    shape = (total, heads, head_dim)

    out, lse2 = fa._flash_attn_forward(
        q, k, v, cu_seqlens, max_seqlen, slopes, scale,
        out=nan_buffer(shape, dtype), lse=nan_buffer((heads, total), torch.float32),
    )
    dq, dk, dv = fa._flash_attn_backward(
        dout, q, k, v, out, lse2, cu_seqlens, max_seqlen, slopes, scale,
        dq=nan_buffer(shape, dtype), dk=nan_buffer(shape, dtype), dv=nan_buffer(shape, dtype),
    )
    oracle, ref, floors = oracle_and_reference(q, k, v, dout, cu_seqlens, slopes, scale)

    assert_within_rule("out", out, ref["out"], oracle["out"], dtype, floors["out"])
    # lse (base 2) only depends on fp32 arithmetic over exactly representable inputs.
    assert not torch.isnan(lse2).any(), "lse: NaN (element not written by the kernel?)"
    lse_nat = lse2.double() / LOG2E
    assert torch.allclose(lse_nat, oracle["lse"], rtol=1e-5, atol=1e-5), max_abs_err(lse_nat, oracle["lse"])
    for name, grad in (("dq", dq), ("dk", dk), ("dv", dv)):
        assert_within_rule(name, grad, ref[name], oracle[name], dtype, floors[name])


def check_public_api(lengths, heads, head_dim, dtype, slopes, seed, q_gain=1.0, softmax_scale=None):
    """Same comparison through the public autograd API."""
    cu_seqlens, total = make_cu_seqlens(lengths)
    scale = 1.0 / math.sqrt(head_dim) if softmax_scale is None else softmax_scale
    slopes = slopes.to(DEVICE)
    q, k, v, dout = random_inputs(total, heads, head_dim, dtype, seed, q_gain)
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    out = flash_attn_varlen_alibi(q, k, v, cu_seqlens, max(lengths), slopes, softmax_scale)
    assert out.is_contiguous()
    out.backward(dout)
    oracle, ref, floors = oracle_and_reference(q, k, v, dout, cu_seqlens, slopes, scale)
    assert_within_rule("out", out.detach(), ref["out"], oracle["out"], dtype, floors["out"])
    for name, t in (("dq", q), ("dk", k), ("dv", v)):
        assert_within_rule(name, t.grad, ref[name], oracle[name], dtype, floors[name])


# ---------------------------------------------------------------------------
# accuracy
# ---------------------------------------------------------------------------

_slopes_kind = st.sampled_from(["zero", "lodestone", "random", "steep"])


def _draw_slopes(kind, heads, seed):
    if kind == "zero":
        return torch.zeros(heads)
    if kind == "lodestone":
        return lodestone_slopes(heads)
    if kind == "steep":  # nearly diagonal attention: exercises exp2 underflow
        return torch.full((heads,), 6.0)
    return torch.rand(heads, generator=torch.Generator().manual_seed(seed + 1)) * 2.0


@settings(max_examples=25, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 130), min_size=1, max_size=5).filter(lambda ls: 0 < sum(ls) <= 320),
    heads=st.integers(1, 3),
    head_dim=st.sampled_from([16, 40, 64]),
    dtype=st.sampled_from(ALL_DTYPES),
    slopes_kind=_slopes_kind,
    q_gain=st.sampled_from([1.0, 4.0]),
    seed=st.integers(0, 2**31 - 1),
)
# Large scores (q_gain 4) with one dominant key per row: the rounding of exp2(t - lse2) in the
# probabilities, once missing from the floors (see rounding_floors).
@example(lengths=[70], heads=1, head_dim=16, dtype=torch.float32, slopes_kind="zero", q_gain=4.0,
         seed=0)
@example(lengths=[7], heads=1, head_dim=16, dtype=torch.float32, slopes_kind="zero", q_gain=4.0,
         seed=1)
@example(lengths=[1, 0, 33, 1], heads=2, head_dim=40, dtype=torch.float32, slopes_kind="lodestone",
         q_gain=1.0, seed=0)
@example(lengths=[0, 64, 0], heads=1, head_dim=16, dtype=torch.float16, slopes_kind="random",
         q_gain=4.0, seed=1)
@example(lengths=[17, 1, 50], heads=3, head_dim=64, dtype=torch.bfloat16, slopes_kind="steep",
         q_gain=1.0, seed=2)
# Steep slopes at block offsets: found when the bias was computed as (slope * i) - (slope * j),
# which rounds each product to the magnitude of the position instead of the distance.
@example(lengths=[20, 104, 33, 8, 33], heads=2, head_dim=40, dtype=torch.float32,
         slopes_kind="steep", q_gain=4.0, seed=33)
@example(lengths=[20, 104, 33, 8, 33], heads=2, head_dim=40, dtype=torch.bfloat16,
         slopes_kind="steep", q_gain=4.0, seed=33)
def test_kernels_match_oracle_hypothesis(lengths, heads, head_dim, dtype, slopes_kind, q_gain, seed):
    slopes = _draw_slopes(slopes_kind, heads, seed)
    check_internal_kernels(lengths, heads, head_dim, dtype, slopes, seed, q_gain)


@pytest.mark.parametrize("head_dim", [16, 40, 64])
@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
def test_public_api_forward_backward(dtype, head_dim):
    # lengths not multiples of the blocks, a 1-token and an empty sequence
    check_public_api([33, 1, 0, 50], heads=2, head_dim=head_dim, dtype=dtype,
                     slopes=lodestone_slopes(2), seed=head_dim)


@pytest.mark.parametrize("head_dim", [80, 96, 128])
def test_large_and_odd_head_dims(head_dim):
    check_internal_kernels([21, 0, 40], heads=1, head_dim=head_dim, dtype=torch.float16,
                           slopes=torch.tensor([0.25]), seed=head_dim)


def test_custom_softmax_scale_and_oversized_max_seqlen():
    check_internal_kernels([5, 30], heads=2, head_dim=16, dtype=torch.float32,
                           slopes=lodestone_slopes(2), seed=3, softmax_scale=0.37, extra_max_seqlen=70)


@pytest.mark.skipif(not fa._INTERPRET, reason="checks the bf16 workaround used only by the Triton interpreter")
def test_interpreted_bf16_is_fp32_math_rounded_to_nearest_even():
    """Interpreted bf16 = the fp32 kernels on the same values, rounded to nearest even at the end."""
    lengths, heads, head_dim = [29, 1, 0, 40], 2, 40
    cu_seqlens, total = make_cu_seqlens(lengths)
    scale = 1.0 / math.sqrt(head_dim)
    slopes = lodestone_slopes(heads).to(DEVICE)
    q, k, v, dout = random_inputs(total, heads, head_dim, torch.bfloat16, seed=13, q_gain=3.0)
    args = (cu_seqlens, max(lengths), slopes, scale)
    out, lse2 = fa._flash_attn_forward(q, k, v, *args)
    out32, lse32 = fa._flash_attn_forward(q.float(), k.float(), v.float(), *args)
    assert torch.equal(lse2, lse32)
    assert torch.equal(out, out32.to(torch.bfloat16))
    grads = fa._flash_attn_backward(dout, q, k, v, out, lse2, *args)
    grads32 = fa._flash_attn_backward(dout.float(), q.float(), k.float(), v.float(), out.float(), lse32, *args)
    for g, g32 in zip(grads, grads32):
        assert g.dtype == torch.bfloat16
        assert torch.equal(g, g32.to(torch.bfloat16))


# ---------------------------------------------------------------------------
# linear ALiBi on the tiles off the diagonal
# ---------------------------------------------------------------------------


def linear_bias_bound(alibi2, distance):
    """``_bias_terms``' documented bound on its bias against the exact path, base-2 units."""
    return 2.0 ** -22 * alibi2 * (distance + 256)


@triton.jit
def _tile_biases(OUT_LINEAR, OUT_EXACT, row_start, col_start, alibi2, R: tl.constexpr,
                 C: tl.constexpr):
    """The bias of the (R, C) tile of rows ``row_start + [0, R)`` and columns ``col_start +
    [0, C)`` through both paths, as the kernels compute them (positions relative to the rows'
    block)."""
    row_pos = fa._bias_positions(0, R)
    offset = col_start - row_start
    side = tl.where(offset > 0, 1.0, -1.0)
    row, col = fa._bias_terms(row_pos, offset, alibi2, side, C)
    exact = fa._scores(tl.zeros([R, C], dtype=tl.float32), row_pos,
                       fa._bias_positions(offset, C), 1.0, alibi2)
    index = tl.arange(0, R)[:, None] * C + tl.arange(0, C)[None, :]
    tl.store(OUT_LINEAR + index, row[:, None] - col[None, :])
    tl.store(OUT_EXACT + index, exact)


@pytest.mark.parametrize("slope", [2.0 ** -8, 0.0625, 0.7071])
@pytest.mark.parametrize("rows,cols", [(0, 16384 - 128), (16384 - 128, 0), (8000, 8128),
                                       (16256, 16000), (128, 16256)])
def test_linear_bias_within_bound_at_far_positions(slope, rows, cols):
    """Far-apart tiles of a 16384-token sequence, sparse rows (one 128 x 128 tile each): the
    linear form of the bias is within the documented bound of the exact float64 bias, and so of
    the exact path (which is within ``2^-24 alibi2 d`` itself)."""
    alibi2 = slope * LOG2E
    linear = torch.empty(128, 128)
    exact = torch.empty(128, 128)
    _tile_biases[(1,)](linear, exact, rows, cols, alibi2, R=128, C=128)
    distance = (torch.arange(rows, rows + 128, dtype=torch.float64)[:, None]
                - torch.arange(cols, cols + 128, dtype=torch.float64)[None, :]).abs()
    truth = -torch.tensor(alibi2, dtype=torch.float32).double() * distance
    assert ((linear.double() - truth).abs() <= linear_bias_bound(alibi2, distance)).all()
    assert ((exact.double() - truth).abs() <= 2.0 ** -24 * alibi2 * distance).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_linear_bias_equals_exact_bias_path(dtype):
    """Whole kernels, forward and backward: outputs, lse and gradients of the linear-bias path
    equal the exact-bias path's within the effect of the bias bound (``|dp / p| <= ln 2 *
    2 * bound``, doubled again for the gradients) plus float32 rounding."""
    lengths = [150, 1, 70]
    cu, total = make_cu_seqlens(lengths)
    gen = torch.Generator().manual_seed(3)
    q, k, v, dout = (torch.randn(total, 2, 16, generator=gen).to(DEVICE, dtype) for _ in range(4))
    slopes = torch.tensor([0.5, 0.004], device=DEVICE)
    args = (cu, max(lengths), slopes, 0.25)
    paths = {}
    for linear in (True, False):
        out, lse = fa._flash_attn_forward(q, k, v, *args, linear_bias=linear)
        grads = fa._flash_attn_backward(dout, q, k, v, out, lse, *args, linear_bias=linear)
        paths[linear] = dict(out=out, lse=lse, dq=grads[0], dk=grads[1], dv=grads[2])
    relative = 4 * math.log(2) * linear_bias_bound(0.5 * LOG2E, max(lengths))
    floor = 2e-6 if dtype == torch.float32 else 2 ** -7  # one bf16 rounding of the result
    for name, exact in paths[False].items():
        scale = exact.abs().max().item()
        torch.testing.assert_close(paths[True][name], exact, rtol=floor, msg=name,
                                   atol=2 * relative * scale + floor * scale)


# ---------------------------------------------------------------------------
# host-side cost of a call
# ---------------------------------------------------------------------------


class _OperatorCount(TorchDispatchMode):
    """Counts the PyTorch operators dispatched outside kernel launches (the interpreter's own
    copies of the launch arguments are not the wrapper's)."""

    def __init__(self):
        super().__init__()
        self.operators, self.launching = [], 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not self.launching:
            self.operators.append(str(func))
        return func(*args, **(kwargs or {}))


@pytest.mark.skipif(not fa._INTERPRET, reason="counts CPU tensors under the interpreter")
@pytest.mark.parametrize("window", ["always", True, False])
def test_forward_dispatches_few_operators(window, monkeypatch):
    """The forward wrapper, windowing pre-pass included, dispatches at most 8 PyTorch operators
    besides its kernel launches (allocations, autograd's bookkeeping): the windowing set-up is
    kernels, not eager operators."""
    counter = _OperatorCount()
    launch = interpreter.GridExecutor.__call__

    def counted_launch(self, *args, **kwargs):
        counter.launching += 1
        try:
            return launch(self, *args, **kwargs)
        finally:
            counter.launching -= 1

    monkeypatch.setattr(interpreter.GridExecutor, "__call__", counted_launch)
    cu, total = make_cu_seqlens([40, 24])
    q, k, v = (torch.randn(total, 2, 16, requires_grad=True) for _ in range(3))
    with counter:
        flash_attn_varlen_alibi(q, k, v, cu, 40, torch.tensor([1.0, 0.5]), window=window)
    assert len(counter.operators) <= 8, counter.operators


def test_zero_slopes_is_plain_attention():
    """All-zero slopes reproduce torch's scaled_dot_product_attention per sequence."""
    lengths, heads, head_dim = [19, 0, 40], 2, 32
    cu_seqlens, total = make_cu_seqlens(lengths)
    q, k, v, _ = random_inputs(total, heads, head_dim, torch.float32, seed=11)
    out = flash_attn_varlen_alibi(q, k, v, cu_seqlens, max(lengths), torch.zeros(heads, device=DEVICE))
    bounds = cu_seqlens.tolist()
    for start, end in zip(bounds[:-1], bounds[1:]):
        if end == start:
            continue
        qs, ks, vs = (t[start:end].transpose(0, 1).double()[None] for t in (q, k, v))
        expected = torch.nn.functional.scaled_dot_product_attention(qs, ks, vs)[0].transpose(0, 1)
        torch.testing.assert_close(out[start:end].double(), expected, rtol=0, atol=2e-6)


def test_single_token_sequences():
    """Softmax over one key is exactly 1: out = v, dv = dout, dq = dk ~ 0."""
    lengths, heads, head_dim = [1, 1, 0, 1], 2, 16
    cu_seqlens, total = make_cu_seqlens(lengths)
    q, k, v, dout = random_inputs(total, heads, head_dim, torch.float16, seed=5)
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    out = flash_attn_varlen_alibi(q, k, v, cu_seqlens, 1, lodestone_slopes(heads).to(DEVICE))
    out.backward(dout)
    assert torch.equal(out, v.detach())
    assert torch.equal(v.grad, dout)
    assert q.grad.abs().max().item() <= 1e-3 and k.grad.abs().max().item() <= 1e-3


def test_backward_with_expanded_output_grad():
    """out.sum().backward() hands the kernel a stride-0 gradient; it must equal an explicit ones grad."""
    lengths, heads, head_dim = [9, 30], 2, 16
    cu_seqlens, total = make_cu_seqlens(lengths)
    q, k, v, _ = random_inputs(total, heads, head_dim, torch.float16, seed=6)
    slopes = lodestone_slopes(heads).to(DEVICE)
    grads = []
    for make_loss in (lambda o: o.sum(), lambda o: (o * torch.ones_like(o)).sum()):
        qq, kk, vv = (t.detach().clone().requires_grad_() for t in (q, k, v))
        make_loss(flash_attn_varlen_alibi(qq, kk, vv, cu_seqlens, 30, slopes)).backward()
        grads.append((qq.grad, kk.grad, vv.grad))
    for a, b in zip(*grads):
        assert torch.equal(a, b)


def test_empty_input():
    heads, head_dim = 2, 16
    q, k, v = (torch.zeros(0, heads, head_dim, device=DEVICE, requires_grad=True) for _ in range(3))
    cu_seqlens = torch.zeros(3, dtype=torch.int32, device=DEVICE)
    out = flash_attn_varlen_alibi(q, k, v, cu_seqlens, 0, torch.ones(heads, device=DEVICE))
    assert out.shape == (0, heads, head_dim)
    out.sum().backward()
    assert q.grad.shape == (0, heads, head_dim)


def test_deterministic():
    lengths, heads, head_dim = [37, 20], 2, 16
    cu_seqlens, total = make_cu_seqlens(lengths)
    q, k, v, dout = random_inputs(total, heads, head_dim, torch.float16, seed=9)
    slopes = lodestone_slopes(heads).to(DEVICE)
    results = []
    for _ in range(2):
        qq, kk, vv = (t.detach().clone().requires_grad_() for t in (q, k, v))
        out = flash_attn_varlen_alibi(qq, kk, vv, cu_seqlens, max(lengths), slopes)
        out.backward(dout)
        results.append([out.detach(), qq.grad, kk.grad, vv.grad])
    for a, b in zip(*results):
        assert torch.equal(a, b)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_packed_qkv_views_are_used_without_copy(dtype, monkeypatch):
    """q, k, v as strided views of one projection output; gradients reach W and x."""
    lengths, heads, head_dim, hidden = [23, 1, 40], 2, 16, 24
    cu_seqlens, total = make_cu_seqlens(lengths)
    gen = torch.Generator().manual_seed(21)
    x = torch.randn(total, hidden, generator=gen).to(DEVICE)
    w = (torch.randn(3 * heads * head_dim, hidden, generator=gen) / math.sqrt(hidden)).to(DEVICE)
    dout = torch.randn(total, heads, head_dim, generator=gen).to(device=DEVICE, dtype=dtype)
    slopes = lodestone_slopes(heads).to(DEVICE)

    seen = {}
    original_forward = fa._flash_attn_forward

    def spy(q, k, v, *args, **kwargs):
        seen.update(q=(q.data_ptr(), q.stride()), k=(k.data_ptr(), k.stride()), v=(v.data_ptr(), v.stride()))
        return original_forward(q, k, v, *args, **kwargs)

    monkeypatch.setattr(fa, "_flash_attn_forward", spy)

    def run(x_in, w_in, attention):
        qkv = x_in @ w_in.T
        q, k, v = qkv.view(total, 3, heads, head_dim).unbind(1)
        return qkv, q, k, v, attention(q, k, v)

    xd, wd = (t.to(dtype).detach().clone().requires_grad_() for t in (x, w))
    qkv, q, k, v, out = run(xd, wd, lambda q, k, v: flash_attn_varlen_alibi(
        q, k, v, cu_seqlens, max(lengths), slopes))
    assert not q.is_contiguous()
    elem = qkv.element_size()
    for i, (name, t) in enumerate((("q", q), ("k", k), ("v", v))):
        assert seen[name] == (qkv.data_ptr() + i * heads * head_dim * elem, t.stride()), name
    out.backward(dout)

    scale = 1.0 / math.sqrt(head_dim)
    x64, w64 = (t.double().detach().clone().requires_grad_() for t in (x, w))
    *_, out64 = run(x64, w64, lambda q, k, v: reference.attention(q, k, v, cu_seqlens, slopes, scale)[0])
    out64.backward(dout.double())
    xr, wr = (t.to(dtype).detach().clone().requires_grad_() for t in (x, w))
    *_, out_ref = run(xr, wr, lambda q, k, v: reference.attention(
        q, k, v, cu_seqlens, slopes, scale, dtype=dtype)[0])
    out_ref.backward(dout)

    # Floors: an error f in the attention grads becomes at most f * sum_t |x_te| in
    # dW = dqkv^T x and f * sum_r |W_re| in dx = dqkv W.
    attn_oracle, _, floors = oracle_and_reference(q.detach(), k.detach(), v.detach(), dout,
                                                  cu_seqlens, slopes, scale)
    unit = torch.finfo(dtype).eps / 2
    attn_floor = max(floors[n] + unit * attn_oracle[n].abs().max().item() for n in ("dq", "dk", "dv"))
    w_floor = attn_floor * x.double().abs().sum(0).max().item()
    x_floor = attn_floor * w.double().abs().sum(0).max().item()
    assert_within_rule("out", out.detach(), out_ref.detach(), out64.detach(), dtype, floors["out"])
    assert_within_rule("dW", wd.grad, wr.grad, w64.grad, dtype, w_floor)
    assert_within_rule("dx", xd.grad, xr.grad, x64.grad, dtype, x_floor)


def test_non_unit_last_dim_stride_is_copied():
    lengths, heads, head_dim = [10, 25], 2, 16
    cu_seqlens, total = make_cu_seqlens(lengths)
    q, k, v, _ = random_inputs(total, heads, head_dim, torch.float32, seed=4)
    q_strided = torch.stack([q, torch.zeros_like(q)], dim=-1)[..., 0]  # last-dim stride 2
    assert q_strided.stride(-1) == 2
    slopes = lodestone_slopes(heads).to(DEVICE)
    out = flash_attn_varlen_alibi(q_strided, k, v, cu_seqlens, 25, slopes)
    expected = flash_attn_varlen_alibi(q, k, v, cu_seqlens, 25, slopes)
    assert torch.equal(out, expected)


def test_no_grad_path():
    lengths, heads, head_dim = [12], 1, 16
    cu_seqlens, total = make_cu_seqlens(lengths)
    q, k, v, _ = random_inputs(total, heads, head_dim, torch.float32, seed=8)
    with torch.no_grad():
        out = flash_attn_varlen_alibi(q, k, v, cu_seqlens, 12, torch.ones(1, device=DEVICE))
    assert out.shape == q.shape and out.dtype == q.dtype and not out.requires_grad


def test_block_sizes_are_public():
    """The block sizes of a kernel's launches, through a function of the module."""
    sizes = fa.block_sizes("fwd", torch.float32)
    if fa._INTERPRET:
        assert sizes == tuning.INTERPRETED["fwd"]
    assert set(fa.block_sizes("dkdv", torch.bfloat16) or {"BLOCK_M": 0, "BLOCK_N": 0}) == \
        {"BLOCK_M", "BLOCK_N"}


# ---------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------


def _valid_args():
    heads, head_dim = 2, 16
    q, k, v = (torch.randn(6, heads, head_dim, device=DEVICE) for _ in range(3))
    return dict(q=q, k=k, v=v, cu_seqlens=torch.tensor([0, 2, 6], dtype=torch.int32, device=DEVICE),
                max_seqlen=4, alibi_slopes=torch.ones(heads, device=DEVICE))


def _set(**updates):
    """Mutator replacing arguments; values may be callables of the valid arguments."""
    def mutate(args):
        resolved = {name: (value(args) if callable(value) else value) for name, value in updates.items()}
        args.update(resolved)
    return mutate


def _i32(values):
    return torch.tensor(values, dtype=torch.int32, device=DEVICE)


_INVALID = [
    (_set(q="not a tensor"), TypeError, "q must be a torch.Tensor"),
    (_set(q=lambda a: a["q"][0]), ValueError, "q must have shape"),
    (_set(k=lambda a: a["k"][:, :1]), ValueError, "same shape"),
    (_set(q=lambda a: a["q"].double()), TypeError, "q must be float16, bfloat16 or float32"),
    (_set(v=lambda a: a["v"].half()), TypeError, "same dtype"),
    (_set(k=lambda a: a["k"].to("meta")), ValueError, "same device"),
    (_set(**{n: (lambda a, n=n: a[n][..., :8]) for n in "qkv"}), ValueError, "head_dim"),
    (_set(**{n: (lambda a, n=n: a[n].repeat(1, 1, 9)) for n in "qkv"}), ValueError, "head_dim"),
    (_set(cu_seqlens=[0, 2, 6]), TypeError, "cu_seqlens must be a torch.Tensor"),
    (_set(cu_seqlens=lambda a: a["cu_seqlens"].long()), TypeError, "cu_seqlens must be int32"),
    (_set(cu_seqlens=lambda a: a["cu_seqlens"][None]), ValueError, "cu_seqlens must be 1-D"),
    (_set(cu_seqlens=lambda a: a["cu_seqlens"][:1]), ValueError, "cu_seqlens must be 1-D"),
    (_set(cu_seqlens=lambda a: a["cu_seqlens"].to("meta")), ValueError, "cu_seqlens must be on the device"),
    (_set(cu_seqlens=lambda a: a["cu_seqlens"] + 1), ValueError, "start at 0"),
    (_set(cu_seqlens=lambda a: _i32([0, 4, 3, 6])), ValueError, "non-decreasing"),
    (_set(cu_seqlens=lambda a: _i32([0, 2, 5])), ValueError, "end at total_tokens"),
    (_set(max_seqlen=3), ValueError, "smaller than the longest"),
    (_set(max_seqlen=-1), ValueError, "non-negative"),
    (_set(max_seqlen=4.0), TypeError, "max_seqlen must be an int"),
    (_set(max_seqlen=True), TypeError, "max_seqlen must be an int"),
    (_set(alibi_slopes=[1.0, 1.0]), TypeError, "alibi_slopes must be a torch.Tensor"),
    (_set(alibi_slopes=lambda a: a["alibi_slopes"].double()), TypeError, "alibi_slopes must be float32"),
    (_set(alibi_slopes=lambda a: torch.ones(3, device=DEVICE)), ValueError, r"alibi_slopes must have shape \(2,\)"),
    (_set(alibi_slopes=lambda a: torch.ones(1, 2, device=DEVICE)), ValueError, "alibi_slopes must have shape"),
    (_set(alibi_slopes=lambda a: a["alibi_slopes"].to("meta")), ValueError, "alibi_slopes must be on the device"),
    (_set(softmax_scale="0.1"), TypeError, "softmax_scale must be a float"),
    (_set(softmax_scale=float("inf")), ValueError, "softmax_scale must be finite"),
]


@pytest.mark.parametrize("mutate,exc,match", _INVALID, ids=[f"{i}-{c[2]}" for i, c in enumerate(_INVALID)])
def test_validation_errors(mutate, exc, match):
    args = _valid_args()
    mutate(args)
    with pytest.raises(exc, match=match):
        flash_attn_varlen_alibi(**args)


def test_accepts_index_like_max_seqlen():
    args = _valid_args()
    args["max_seqlen"] = torch.tensor(4)  # has __index__
    assert flash_attn_varlen_alibi(**args).shape == args["q"].shape


# ---------------------------------------------------------------------------
# GPU (compiled kernels, autotuned configs, realistic sizes)
# ---------------------------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (compiled Triton kernels)")
class TestCUDA:
    @pytest.mark.parametrize("head_dim", [64, 80, 128])
    @pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
    def test_large_varlen(self, dtype, head_dim):
        lengths = [1, 513, 0, 1000, 77, 2048, 130]
        check_internal_kernels(lengths, heads=12, head_dim=head_dim, dtype=dtype,
                               slopes=lodestone_slopes(12), seed=head_dim)

    def test_float32_is_not_tf32(self):
        check_internal_kernels([700, 3, 300], heads=4, head_dim=64, dtype=torch.float32,
                               slopes=lodestone_slopes(4), seed=1)

    @pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
    def test_public_api_packed_views(self, dtype):
        check_public_api([1024, 17, 0, 300], heads=12, head_dim=64, dtype=dtype,
                         slopes=lodestone_slopes(12), seed=7)

    def test_many_short_sequences(self):
        # more sequences than CUDA's 65535 limit on grid dims y/z (the grid is 1-D)
        seqlen, batch, heads, head_dim = 2, 70000, 2, 32
        cu_seqlens, total = make_cu_seqlens([seqlen] * batch)
        q, k, v, _ = random_inputs(total, heads, head_dim, torch.float16, seed=3)
        slopes = torch.tensor([0.5, 0.1], device=DEVICE)
        out = flash_attn_varlen_alibi(q, k, v, cu_seqlens, seqlen, slopes)
        qb, kb, vb = (t.double().view(batch, seqlen, heads, head_dim).transpose(1, 2) for t in (q, k, v))
        pos = torch.arange(seqlen, device=DEVICE, dtype=torch.float64)
        bias = -slopes.double()[:, None, None] * (pos[:, None] - pos[None, :]).abs()
        scores = qb @ kb.transpose(-1, -2) / math.sqrt(head_dim) + bias
        expected = (scores.softmax(-1) @ vb).transpose(1, 2).reshape(total, heads, head_dim)
        assert max_abs_err(out, expected) <= 4 * torch.finfo(torch.float16).eps * expected.abs().max().item()


# ---------------------------------------------------------------------------
# learned slopes: the gradient of the ALiBi slopes
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("lengths,heads,gain,window", [
    ([37, 5, 70, 0, 16], 3, 4.0, False),      # packed: empty, short and partial-block sequences
    ([130, 1, 64], 2, 16.0, fa.WINDOW_ALWAYS),   # steep slopes: windowing skips key blocks
    ([90], 2, 0.01, fa.WINDOW_ALWAYS),           # nearly flat slopes: every pair counts
])
def test_slope_gradient_equals_the_reference_autograd(lengths, heads, gain, window):
    """float32: the kernel's dslope_h = -sum dS_ij |i - j| against the float64 reference's
    autograd. The kernel sums the terms tile by tile and forms P from base-2 scores, so its
    error may exceed twice the plain float32 reference's by a floor of 4e-6 (67 float32 units)
    of the largest gradient."""
    cu, total = make_cu_seqlens(lengths)
    generator = torch.Generator().manual_seed(len(lengths) * 7 + heads)
    q, k, v, dout = (torch.randn(total, heads, 32, generator=generator).to(DEVICE)
                     for _ in range(4))
    base = (lodestone_slopes(heads) * gain).to(DEVICE)

    def slope_grad(compute):
        slopes = base.clone().double().requires_grad_(True) if compute is None else \
            base.clone().requires_grad_(True)
        if compute is None:
            out = reference.attention(q, k, v, cu, slopes)[0]
        else:
            out = compute(slopes)
        return torch.autograd.grad(out, slopes, dout.to(out.dtype))[0].double()

    oracle = slope_grad(None)
    kernel = slope_grad(lambda s: flash_attn_varlen_alibi(q, k, v, cu, max(lengths), s,
                                                          window=window))
    plain = slope_grad(lambda s: reference.attention(q, k, v, cu, s, dtype=torch.float32)[0])
    kernel_error = (kernel - oracle).abs().max().item()
    plain_error = (plain - oracle).abs().max().item()
    assert kernel_error <= 2 * plain_error + 4e-6 * oracle.abs().max().item()


def test_windowed_slope_gradient_equals_the_unwindowed_one():
    """Skipped key blocks have P exactly 0, so they add nothing to dS |i - j| either."""
    cu, total = make_cu_seqlens([128])
    generator = torch.Generator().manual_seed(11)
    q, k, v, dout = (torch.randn(total, 2, 16, generator=generator).to(DEVICE) for _ in range(4))
    grads = []
    for window in (False, fa.WINDOW_ALWAYS):
        slopes = (lodestone_slopes(2) * 32).to(DEVICE).requires_grad_(True)
        out = flash_attn_varlen_alibi(q, k, v, cu, 128, slopes, window=window)
        grads.append(torch.autograd.grad(out, slopes, dout)[0])
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-5, atol=1e-5)
