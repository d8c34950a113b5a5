import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from mosaic_encoder import ConfigError
from mosaic_encoder.alibi import alibi_bias, alibi_slopes
from mosaic_encoder.attention_names import IMPLEMENTATION_NAMES
from mosaic_encoder.attention import (IMPLEMENTATIONS, padded_rows_attention, resolve_impl,
                                      sdpa_varlen_alibi, varlen_attention)
from mosaic_encoder.padding import Packing, PaddedRows
from helpers import packed_qkv
from mosaic_kernels import reference


def attention_oracle(q, k, v, cu_seqlens, slopes):
    return reference.attention(q, k, v, cu_seqlens, slopes)[0]


@given(lengths=st.lists(st.integers(0, 40), min_size=1, max_size=5).filter(any),
       heads=st.integers(1, 4), budget=st.sampled_from([1, 7, 64, 1 << 24]))
def test_chunked_sdpa_matches_oracle_at_any_chunk_size(lengths, heads, budget):
    """Query chunking and same-length grouping are exact, whatever the chunk boundaries."""
    q, k, v, cu = packed_qkv(lengths, heads, 16)
    slopes = alibi_slopes(heads)
    out = sdpa_varlen_alibi(q, k, v, cu, slopes, max_score_elements=budget)
    torch.testing.assert_close(out.double(), attention_oracle(q, k, v, cu, slopes),
                               rtol=1e-5, atol=1e-5)


def test_chunking_does_not_change_results():
    q, k, v, cu = packed_qkv([300, 1, 299, 300], 3, 16, seed=1)
    slopes = alibi_slopes(3)
    whole = sdpa_varlen_alibi(q, k, v, cu, slopes)
    for budget in (3 * 300 * 64, 3 * 300 * 64 + 1, 3 * 300 * 127, 3 * 300 * 300 - 1):
        torch.testing.assert_close(sdpa_varlen_alibi(q, k, v, cu, slopes, max_score_elements=budget),
                                   whole, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_error_bounded_by_plain_pytorch(dtype):
    q, k, v, cu = packed_qkv([64, 17, 100], 4, 32, dtype=dtype, seed=2)
    slopes = alibi_slopes(4)
    oracle = attention_oracle(q, k, v, cu, slopes)
    ours = (sdpa_varlen_alibi(q, k, v, cu, slopes).double() - oracle).abs().max()
    # Plain PyTorch in the same dtype: dense scores, softmax and product all in `dtype`.
    plain = torch.cat([
        torch.softmax((torch.einsum("ihd,jhd->hij", q[s:e], k[s:e]) / 32 ** 0.5
                       + alibi_bias(slopes, torch.arange(e - s), torch.arange(e - s)).to(dtype)), -1).matmul(v[s:e].transpose(0, 1))
        .transpose(0, 1) for s, e in zip(cu[:-1].tolist(), cu[1:].tolist())])
    reference = (plain.double() - oracle).abs().max()
    assert ours <= 2 * reference


def test_the_torch_free_names_are_the_registry():
    assert tuple(IMPLEMENTATIONS) == IMPLEMENTATION_NAMES


def test_auto_resolves_to_sdpa_on_cpu_and_rejects_unknown():
    assert resolve_impl("auto", torch.device("cpu")) == "sdpa"
    with pytest.raises(ConfigError, match="must be"):
        resolve_impl("flash", torch.device("cpu"))


def test_triton_on_cpu_without_interpreter_is_an_error(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    q, k, v, cu = packed_qkv([4], 1, 16)
    with pytest.raises(ConfigError, match="TRITON_INTERPRET"):
        varlen_attention(q, k, v, cu, 4, alibi_slopes(1), impl="triton")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_inference_buffers_equal_autograd_path(dtype):
    """The buffer-reusing inference path computes what the differentiable path computes."""
    q, k, v, cu = packed_qkv([37, 64, 1, 64], 3, 16, dtype=dtype, seed=4)
    slopes = alibi_slopes(3)
    inference = sdpa_varlen_alibi(q, k, v, cu, slopes, max_score_elements=3 * 64 * 20)
    q.requires_grad_(True)
    training = sdpa_varlen_alibi(q, k, v, cu, slopes, max_score_elements=3 * 64 * 20)
    assert training.requires_grad
    torch.testing.assert_close(inference, training.detach(), rtol=0, atol=0)


@given(lengths=st.lists(st.integers(0, 12), min_size=1, max_size=4), extra=st.integers(0, 3),
       left=st.booleans(), alibi=st.booleans())
def test_padded_rows_attention_equals_packed_attention(lengths, extra, left, alibi):
    """The compiled path's dense rows give the real tokens what the packed path gives them."""
    seqlen = max(lengths) + extra
    positions = torch.arange(seqlen)
    bounds = torch.tensor(lengths)[:, None]
    mask = positions >= seqlen - bounds if left else positions < bounds
    rows, packing = PaddedRows.from_mask(mask), Packing.from_mask(mask)
    q, k, v, _ = packed_qkv([seqlen] * len(lengths), 3, 16, seed=sum(lengths))
    slopes = alibi_slopes(3) if alibi else None
    dense = padded_rows_attention(q, k, v, rows.cu_seqlens, seqlen, slopes)
    real = mask.flatten()
    packed = sdpa_varlen_alibi(q[real], k[real], v[real], packing.cu_seqlens, slopes)
    torch.testing.assert_close(dense[real], packed, rtol=1e-5, atol=1e-6)
    assert torch.isfinite(dense).all()


# --- the implementations' declared capabilities --------------------------------------------


@pytest.mark.parametrize("name", IMPLEMENTATIONS)
def test_learned_slopes_get_the_reference_gradient_under_every_implementation(name):
    """float32, a packed batch: d(out . g)/d(slopes) against the float64 reference's autograd,
    eagerly and (sdpa) on the compiled path's padded rows."""
    q, k, v, cu = packed_qkv([23, 1, 0, 40], 2, 16, seed=5)
    grad_out = torch.randn(q.shape, generator=torch.Generator().manual_seed(6))
    base = alibi_slopes(2) * 4

    def slope_grad(attend, dtype=torch.float32):
        slopes = base.to(dtype).requires_grad_(True)
        out = attend(slopes)
        return torch.autograd.grad(out, slopes, grad_out.to(out.dtype))[0].double()

    oracle = slope_grad(lambda s: reference.attention(q, k, v, cu, s)[0], torch.float64)
    ours = slope_grad(lambda s: varlen_attention(q, k, v, cu, 40, s, impl=name))
    torch.testing.assert_close(ours, oracle, rtol=1e-5, atol=1e-4)
    assert IMPLEMENTATIONS[name].slope_gradient


def test_learned_slopes_get_the_gradient_on_the_compiled_path():
    q, k, v, cu = packed_qkv([5, 3], 2, 16, seed=7)
    rows = PaddedRows.from_mask(torch.tensor([[1] * 5 + [0] * 3, [1] * 3 + [0] * 5]))
    mask = torch.tensor([[1] * 5 + [0] * 3, [1] * 3 + [0] * 5]).bool().flatten()
    padded = [torch.zeros(16, 2, 16) for _ in range(3)]
    for tensor, source in zip(padded, (q, k, v)):
        tensor[mask] = source
    slopes = (alibi_slopes(2) * 4).requires_grad_(True)
    out = padded_rows_attention(*padded, rows.cu_seqlens, 8, slopes)
    (ours,) = torch.autograd.grad(out[mask].sum(), slopes)
    reference_slopes = slopes.detach().double().requires_grad_(True)
    (expected,) = torch.autograd.grad(
        reference.attention(q, k, v, cu, reference_slopes)[0].sum(), reference_slopes)
    torch.testing.assert_close(ours.double(), expected, rtol=1e-5, atol=1e-5)


def test_asking_an_implementation_for_what_it_lacks_names_both():
    q, k, v, cu = packed_qkv([4], 1, 16)
    with pytest.raises(ConfigError, match="'triton' does not support attention dropout"):
        varlen_attention(q, k, v, cu, 4, alibi_slopes(1), impl="triton", dropout_p=0.1)
    q8, k8, v8, cu8 = packed_qkv([4], 1, 8)
    with pytest.raises(ConfigError, match="'triton' does not support head size 8 \\(it supports "
                                          "16 to 128\\)"):
        varlen_attention(q8, k8, v8, cu8, 4, alibi_slopes(1), impl="triton")
    with pytest.raises(ConfigError, match="'triton' does not support float64 inputs"):
        varlen_attention(q.double(), k.double(), v.double(), cu, 4, alibi_slopes(1),
                         impl="triton")


def test_a_missing_slope_gradient_is_an_error_not_a_frozen_parameter():
    """An implementation declaring no slope gradient refuses learned slopes that need one."""
    from dataclasses import replace

    frozen = replace(IMPLEMENTATIONS["sdpa"], name="frozen", slope_gradient=False)
    q, k, v, cu = packed_qkv([4], 1, 16)
    with pytest.raises(ConfigError, match="'frozen' does not support gradients for learned "
                                          "ALiBi slopes"):
        frozen.check(q, alibi_slopes(1).requires_grad_(True), 0.0)
    with torch.no_grad():
        frozen.check(q, alibi_slopes(1).requires_grad_(True), 0.0)
