"""Exact ALiBi windowing in the plain-PyTorch chunked attention (``sdpa``)."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mosaic_encoder import MosaicConfig
from mosaic_encoder.alibi import alibi_slopes
from mosaic_encoder import attention
from mosaic_encoder.attention import sdpa_varlen_alibi, sdpa_visited_pairs
from mosaic_encoder.errors import ConfigError
from mosaic_encoder.models import MosaicBertModel
from mosaic_kernels.reference import attention as reference_attention  # noqa: E402


def packed(lengths, heads, head_dim, seed, gain=1.0):
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(sum(lengths), heads, head_dim, generator=gen) for _ in range(3))
    cu_seqlens = torch.tensor([0, *lengths], dtype=torch.int32).cumsum(0, dtype=torch.int32)
    return q * gain, k * gain, v, cu_seqlens


def both(q, k, v, cu, slopes, grad=False, **kwargs):
    """(windowed, unwindowed) outputs, and with ``grad`` the gradients of sum(out * w)."""
    results = []
    for window in (True, False):
        leaves = [t.clone().requires_grad_(grad) for t in (q, k, v)]
        out = sdpa_varlen_alibi(*leaves, cu, slopes, window=window, **kwargs)
        if grad:
            (out * torch.linspace(-1, 1, out.shape[-1])).sum().backward()
        results.append([out.detach()] + ([t.grad for t in leaves] if grad else []))
    return results


@settings(derandomize=True, max_examples=25)
@given(lengths=st.lists(st.integers(0, 300), min_size=1, max_size=4).filter(any),
       heads=st.integers(1, 4), slope=st.sampled_from([0.1, 0.7, 3.0]),
       gain=st.sampled_from([0.3, 2.0]), far_gain=st.sampled_from([0.0, 50.0]),
       budget=st.sampled_from([1 << 12, 1 << 16, 1 << 23]), seed=st.integers(0, 2 ** 16))
def test_windowed_equals_unskipped(lengths, heads, slope, gain, far_gain, budget, seed):
    q, k, v, cu = packed(lengths, heads, 16, seed, gain)
    for start, length in zip(cu[:-1].tolist(), lengths):
        if length > 1:  # a far key aligned with the first query: it may dominate that row
            k[start + length - 1] += far_gain * q[start] / q[start].norm(dim=-1, keepdim=True)
    slopes = slope * torch.linspace(1, 0.1, heads)
    windowed, full = both(q, k, v, cu, slopes, max_score_elements=budget)
    torch.testing.assert_close(windowed[0], full[0], rtol=1e-5, atol=2e-6)


def test_gradients_equal_unskipped():
    q, k, v, cu = packed([400, 7, 250], 3, 16, seed=3)
    slopes, budget = torch.tensor([8.0, 4.0, 0.0]), 1 << 14
    dense = 3 * (400 ** 2 + 7 ** 2 + 250 ** 2)
    assert sdpa_visited_pairs(q, k, v, cu, slopes, max_score_elements=budget) < dense
    windowed, full = both(q, k, v, cu, slopes, grad=True, max_score_elements=budget)
    for name, a, b in zip(("out", "dq", "dk", "dv"), windowed, full):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=2e-6, msg=name)


def test_dominant_far_key_is_kept():
    q, k, v, cu = packed([500], 1, 32, seed=4)
    k[480] = 100.0 * q[0]  # scale * q0.k480 ~ 100 * 32 / sqrt(32) = 566 > the bias 1.0 * 480
    slopes = torch.tensor([1.0])
    windowed = sdpa_varlen_alibi(q, k, v, cu, slopes, max_score_elements=1 << 14)
    torch.testing.assert_close(windowed[0].double(), v[480].double(), rtol=0, atol=1e-4)
    torch.testing.assert_close(windowed.double(), reference_attention(q, k, v, cu, slopes)[0],
                               rtol=1e-5, atol=2e-6)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_windowed_equals_unskipped(dtype):
    q, k, v, cu = packed([600, 90], 4, 32, seed=5)
    q, k, v = (t.to(dtype) for t in (q, k, v))
    windowed, full = both(q, k, v, cu, alibi_slopes(4), max_score_elements=1 << 18)
    # Same float32 softmax; only the products' blocking may differ: within two ulps of 1.
    torch.testing.assert_close(windowed[0], full[0], rtol=0, atol=2 * torch.finfo(dtype).eps)


@pytest.mark.parametrize("grad", [False, True])
def test_visited_pairs_count_the_scores_computed(grad, monkeypatch):
    """sdpa_visited_pairs is the plan the attention runs: it equals the (query, key) scores the
    chunk products compute (inference buffers, or the checkpointed path with gradients); fewer
    than every pair with steep slopes, all of them without windowing or without ALiBi."""
    computed = []

    def counting(original):
        def attend(*args, **kwargs):
            q, k = args[-4], args[-3]  # (n, heads, rows, d), (n, heads, keys, d)
            computed.append(q.shape[0] * q.shape[1] * q.shape[2] * k.shape[2])
            return original(*args, **kwargs)
        return attend
    monkeypatch.setattr(attention._BufferedAttention, "__call__",
                        counting(attention._BufferedAttention.__call__))
    monkeypatch.setattr(attention, "_biased_attention", counting(attention._biased_attention))
    lengths = [1500, 1500, 90, 3]
    q, k, v, cu = packed(lengths, 4, 16, seed=6)
    # Steep slopes: reaches of a few dozen keys against 21-row chunks of 1500 keys, so the plan
    # groups the heads over narrow key ranges.
    slopes, budget = torch.tensor([8.0, 4.0, 2.0, 1.0]), 1 << 17
    dense = 4 * sum(n * n for n in lengths)
    for window in (True, False):
        computed.clear()
        leaves = [t.clone().requires_grad_(grad) for t in (q, k, v)]
        sdpa_varlen_alibi(*leaves, cu, slopes, window=window, max_score_elements=budget)
        pairs = sdpa_visited_pairs(q, k, v, cu, slopes, window=window, max_score_elements=budget)
        assert sum(computed) == pairs
        assert pairs < dense if window else pairs == dense
    assert sdpa_visited_pairs(q, k, v, cu, None, max_score_elements=budget) == dense


def test_model_switch():
    config = MosaicConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                          intermediate_size=64, attention_impl="sdpa")
    torch.manual_seed(0)
    model = MosaicBertModel(config).eval()
    ids = torch.randint(0, 50, (2, 300))
    mask = torch.ones_like(ids)
    mask[1, 200:] = 0
    with torch.no_grad():
        on = model(ids, mask).last_hidden_state
        for layer in model.encoder.layer:
            layer.attention.self.attention_window = False
        off = model(ids, mask).last_hidden_state
    torch.testing.assert_close(on, off, rtol=1e-5, atol=1e-5)
    with pytest.raises(ConfigError, match="attention_window"):
        config.replace(attention_window="yes")
