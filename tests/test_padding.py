import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from mosaic_encoder import InputError
from mosaic_encoder.padding import Packing, PaddedRows, pad, unpad


def mask_from_lengths(lengths, seqlen, left=False):
    positions = torch.arange(seqlen)
    lengths = torch.tensor(lengths)
    if left:
        return (positions[None, :] >= seqlen - lengths[:, None]).long()
    return (positions[None, :] < lengths[:, None]).long()


@given(lengths=st.lists(st.integers(0, 12), min_size=1, max_size=6), extra=st.integers(0, 3),
       left=st.booleans())
def test_unpad_pad_round_trip(lengths, extra, left):
    seqlen = max(lengths) + extra
    mask = mask_from_lengths(lengths, seqlen, left)
    x = torch.randn(len(lengths), seqlen, 3)
    packing = Packing.from_mask(mask)
    packed = unpad(x, packing)
    assert packed.shape == (sum(lengths), 3)
    assert packing.seqlens() == lengths and packing.max_seqlen == max(lengths)
    assert packing.cu_seqlens.dtype == torch.int32
    restored = pad(packed, packing)
    assert torch.equal(restored, x * mask[..., None])
    expected_positions = torch.cat([torch.arange(n) for n in lengths]) if sum(lengths) else \
        torch.zeros(0, dtype=torch.long)
    assert torch.equal(packing.positions(), expected_positions)


def test_mask_with_gap_is_rejected():
    with pytest.raises(InputError, match="row 1 has gaps"):
        Packing.from_mask(torch.tensor([[1, 1, 0], [1, 0, 1]]))


def test_mask_values_and_shape_checked():
    with pytest.raises(InputError, match="only 0 and 1"):
        Packing.from_mask(torch.tensor([[1, 2]]))
    with pytest.raises(InputError, match="shape"):
        Packing.from_mask(torch.ones(3))


def test_fractional_mask_values_are_refused_not_truncated():
    for value in (0.5, 1.7):
        with pytest.raises(InputError, match=f"found {value}"):
            Packing.from_mask(torch.tensor([[1.0, value]]))


@given(lengths=st.lists(st.integers(0, 12), min_size=1, max_size=6), extra=st.integers(0, 3),
       left=st.booleans())
def test_padded_rows_keep_every_position_and_agree_with_packing(lengths, extra, left):
    """PaddedRows: T = B * S; three sequences a row, the real one as long as the row's ones;
    positions of real tokens equal Packing's; pad zeroes the padding."""
    seqlen = max(lengths) + extra
    mask = mask_from_lengths(lengths, seqlen, left)
    rows, packing = PaddedRows.from_mask(mask), Packing.from_mask(mask)
    assert rows.max_seqlen == seqlen and rows.cu_seqlens.dtype == torch.int32
    sequence_lengths = rows.cu_seqlens.diff().view(-1, 3)
    assert sequence_lengths[:, 1].tolist() == lengths
    assert sequence_lengths.sum(1).tolist() == [seqlen] * len(lengths)
    real = mask.flatten().bool()
    assert torch.equal(rows.positions()[real], packing.positions())
    x = torch.randn(len(lengths), seqlen, 3)
    assert unpad(x, rows).shape == (len(lengths) * seqlen, 3)
    assert torch.equal(pad(unpad(x, rows), rows), x * mask[..., None])
