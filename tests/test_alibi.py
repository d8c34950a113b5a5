import json

import torch
from hypothesis import given
from hypothesis import strategies as st

from helpers import DATA
from mosaic_encoder.alibi import alibi_bias, alibi_slopes

TABLE = json.loads((DATA / "alibi_slopes.json").read_text())


@given(st.integers(1, 32))
def test_slopes_equal_upstream_table(heads):
    expected = torch.tensor(TABLE[str(heads)], dtype=torch.float32)
    assert torch.equal(alibi_slopes(heads), expected)


def test_twelve_heads_interleave():
    exponents = [-1, -2, -3, -4, -5, -6, -7, -8, -0.5, -1.5, -2.5, -3.5]
    assert torch.equal(alibi_slopes(12), torch.tensor([2.0 ** e for e in exponents]))


@given(heads=st.integers(1, 16), lq=st.integers(1, 40), lk=st.integers(1, 40),
       offset=st.integers(0, 5000))
def test_bias_is_minus_slope_times_distance(heads, lq, lk, offset):
    slopes = alibi_slopes(heads)
    q, k = torch.arange(lq) + offset, torch.arange(lk)
    bias = alibi_bias(slopes, q, k)
    assert bias.shape == (heads, lq, lk) and bias.dtype == torch.float32
    expected = -slopes.double()[:, None, None] * (q[:, None] - k[None, :]).abs().double()
    torch.testing.assert_close(bias.double(), expected, rtol=1e-7, atol=0)


def test_bias_symmetric_zero_diagonal():
    positions = torch.arange(50)
    bias = alibi_bias(alibi_slopes(12), positions, positions)
    assert torch.equal(bias, bias.transpose(1, 2))
    assert torch.all(bias.diagonal(dim1=1, dim2=2) == 0)


@given(heads=st.integers(1, 12), data=st.data())
def test_bias_view_is_the_bias_with_rows_reversed(heads, data):
    from mosaic_encoder.alibi import alibi_bias_view, alibi_offset_table
    length = data.draw(st.integers(1, 64))
    first = data.draw(st.integers(0, length - 1))
    rows = data.draw(st.integers(1, length - first))
    slopes = alibi_slopes(heads)
    view = alibi_bias_view(alibi_offset_table(slopes, length), length, first, rows)
    expected = alibi_bias(slopes, torch.arange(first, first + rows), torch.arange(length))
    assert torch.equal(view.flip(1), expected)
