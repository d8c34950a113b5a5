import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from mosaic_encoder import ConfigError
from mosaic_encoder.alibi import alibi_bias, alibi_slopes
from mosaic_encoder.attention import (padded_rows_attention, resolve_impl, sdpa_varlen_alibi,
                                      varlen_attention)
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
