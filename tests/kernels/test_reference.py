"""The attention reference (mosaic_kernels.reference): its analytic backward against autograd,
its pieces against independent formulas, and its mixed-precision mode."""

import math

import pytest
import torch

from helpers import cu_seqlens_of, packed_qkv
from mosaic_encoder.alibi import alibi_bias, alibi_slopes
from mosaic_kernels import reference


def test_analytic_backward_matches_autograd():
    lengths = [5, 0, 7]
    q, k, v, cu = packed_qkv(lengths, 3, 8, dtype=torch.float64)
    dout = torch.randn(q.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    slopes = alibi_slopes(3)
    ref = reference.attention_with_grads(q, k, v, dout, cu, slopes, 1 / math.sqrt(8))
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    out, lse = reference.attention(*leaves, cu, slopes)
    torch.testing.assert_close(ref.out, out.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ref.lse, lse.detach(), rtol=1e-12, atol=1e-12)
    for got, want in zip((ref.dq, ref.dk, ref.dv), torch.autograd.grad(out, leaves, dout)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_matches_dense_formula_with_the_models_alibi_bias():
    """Per sequence: softmax(q k^T / sqrt(d) + the model's ALiBi bias) v, and its logsumexp."""
    lengths, heads = [9, 1, 16], 4
    q, k, v, cu = packed_qkv(lengths, heads, 16, dtype=torch.float64, seed=3)
    slopes = alibi_slopes(heads)
    out, lse = reference.attention(q, k, v, cu, slopes)
    for start, end in zip(cu[:-1].tolist(), cu[1:].tolist()):
        positions = torch.arange(end - start)
        scores = (torch.einsum("ihd,jhd->hij", q[start:end], k[start:end]) / 4.0
                  + alibi_bias(slopes, positions, positions).double())
        expected = torch.einsum("hij,jhd->ihd", scores.softmax(-1), v[start:end])
        torch.testing.assert_close(out[start:end], expected, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(lse[:, start:end], scores.logsumexp(-1), rtol=1e-12,
                                   atol=1e-12)


def test_zero_slopes_is_plain_attention_and_empty_sequences_give_zeros():
    q, k, v, cu = packed_qkv([6, 0, 11], 2, 8, dtype=torch.float64, seed=5)
    out, _ = reference.attention(q, k, v, cu, torch.zeros(2), softmax_scale=0.3)
    for start, end in ((0, 6), (6, 17)):
        qs, ks, vs = (t[start:end].transpose(0, 1) for t in (q, k, v))
        expected = torch.nn.functional.scaled_dot_product_attention(qs, ks, vs, scale=0.3)
        torch.testing.assert_close(out[start:end], expected.transpose(0, 1))
    empty, lse = reference.attention(q[:0], k[:0], v[:0], cu_seqlens_of([0, 0]), torch.zeros(2))
    assert empty.shape == (0, 2, 8) and lse.shape == (2, 0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_mode_rounds_products_and_probabilities(dtype):
    """dtype=bf16/fp16: products in that dtype, softmax in float32; close to, not equal to,
    float64."""
    q, k, v, cu = packed_qkv([20, 7], 2, 16, dtype=dtype, seed=7)
    slopes = alibi_slopes(2)
    out, lse = reference.attention(q, k, v, cu, slopes, dtype=dtype)
    exact, exact_lse = reference.attention(q, k, v, cu, slopes)
    assert out.dtype == dtype and lse.dtype == torch.float32
    error = (out.double() - exact).abs().max().item()
    assert 0 < error < 20 * torch.finfo(dtype).eps
    assert (lse.double() - exact_lse).abs().max().item() < 0.05


def test_scores_are_the_biased_logits():
    q, k, _, cu = packed_qkv([4, 3], 2, 8, dtype=torch.float64, seed=2)
    slopes = torch.tensor([0.5, 2.0])
    blocks = list(reference.scores(q, k, cu, slopes))
    assert [(s, e) for s, e, _ in blocks] == [(0, 4), (4, 7)]
    start, end, s = blocks[1]
    i, j = 2, 0
    expected = (q[start + i, 1] @ k[start + j, 1]).item() / math.sqrt(8) - 2.0 * abs(i - j)
    assert s[1, i, j].item() == pytest.approx(expected, rel=1e-12)


def test_rejects_inconsistent_shapes():
    q, k, v, cu = packed_qkv([4], 2, 8)
    with pytest.raises(ValueError, match="same shape"):
        reference.attention(q, k[:, :1], v, cu, torch.zeros(2))
    with pytest.raises(ValueError, match="alibi_slopes"):
        reference.attention(q, k, v, cu, torch.zeros(3))
    with pytest.raises(ValueError, match="dout"):
        reference.attention_with_grads(q, k, v, q[:2], cu, torch.zeros(2))
