"""RoPE in the rotate-half convention, against the pair-by-pair formula, and its defining
property: rotated scores depend on positions only through their difference."""

import torch
from hypothesis import given
from hypothesis import strategies as st

import formulas
from mosaic_encoder.rotary import rotary_tables, rotate


@given(tokens=st.integers(1, 20), heads=st.integers(1, 3), half=st.integers(1, 8),
       theta=st.sampled_from([10.0, 10000.0, 500000.0]), dtype=st.sampled_from(
           [torch.float32, torch.bfloat16]))
def test_rotate_equals_the_pairwise_formula(tokens, heads, half, theta, dtype):
    generator = torch.Generator().manual_seed(tokens * 100 + heads * 10 + half)
    x = torch.randn(tokens, heads, 2 * half, generator=generator).to(dtype)
    positions = torch.randint(0, 5000, (tokens,), generator=generator)
    cos, sin = rotary_tables(positions, 2 * half, theta)
    assert cos.dtype == sin.dtype == torch.float32 and cos.shape == (tokens, half)
    out = rotate(x, cos, sin)
    assert out.dtype == dtype
    expected = formulas.rope_rotate_half(x.double(), positions, theta)
    # float32 angles of positions up to 5000 are exact to ~3e-4 radians.
    tolerance = 2e-3 if dtype == torch.float32 else 3e-2
    torch.testing.assert_close(out.double(), expected, rtol=tolerance, atol=tolerance)


@given(i=st.integers(0, 300), j=st.integers(0, 300), shift=st.integers(0, 300))
def test_scores_depend_only_on_the_distance(i, j, shift):
    generator = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 1, 1, 16, generator=generator).unbind(0)

    def score(a, b):
        cos, sin = rotary_tables(torch.tensor([a, b]), 16, 10000.0)
        rq = rotate(q, cos[:1], sin[:1])
        rk = rotate(k, cos[1:], sin[1:])
        return (rq * rk).sum().item()

    assert abs(score(i, j) - score(i + shift, j + shift)) < 1e-3


def test_position_zero_is_the_identity():
    x = torch.randn(3, 2, 8)
    cos, sin = rotary_tables(torch.zeros(3, dtype=torch.long), 8, 10000.0)
    assert torch.equal(rotate(x, cos, sin), x)
