import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from mosaic_encoder.errors import InputError
from mosaic_encoder.pretraining.masking import Masker, MaskingRates

MASK, SPECIAL, VOCAB = 4, [0, 1, 2, 3, 4], 1000


def masked(rates, rows=64, length=512, seed=0):
    ids = torch.randint(5, VOCAB, (rows, length), generator=torch.Generator().manual_seed(99))
    ids[:, 0], ids[:, -1] = 2, 3  # [CLS] ... [SEP]
    mask = torch.ones_like(ids)
    mask[: rows // 4, length // 2:] = 0  # some padding
    ids[mask == 0] = 0
    return ids, mask, Masker(rates, MASK, SPECIAL, VOCAB)(ids, mask,
                                                          torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("rates", [MaskingRates(), MaskingRates(0.15, 0.5, 0.25)])
def test_rates_match_the_configuration(rates):
    ids, mask, batch = masked(rates)
    ordinary = mask.bool() & (ids >= 5)
    selected = batch.selected
    share = selected.sum() / ordinary.sum()
    assert abs(float(share) - rates.rate) < 0.01
    shown = batch.input_ids[selected]
    original = ids[selected]
    as_mask = float((shown == MASK).float().mean())
    unchanged = float((shown == original).float().mean())
    # A random replacement draws the original id one time in 995.
    assert abs(as_mask - rates.mask) < 0.015
    assert abs(unchanged - (rates.keep + rates.random / 995)) < 0.015
    assert abs(1 - as_mask - unchanged - rates.random) < 0.015


def test_special_and_padding_tokens_are_never_selected_nor_drawn():
    ids, mask, batch = masked(MaskingRates(0.9, 0.0, 1.0))
    assert not batch.selected[~(mask.bool() & (ids >= 5))].any()
    assert torch.equal(batch.input_ids[~batch.selected], ids[~batch.selected])
    assert int(batch.input_ids[batch.selected].min()) >= 5
    assert torch.equal(batch.labels, ids)


def test_same_seed_same_masks_other_seed_other_masks():
    first, second, other = (masked(MaskingRates(), seed=s)[2] for s in (1, 1, 2))
    assert torch.equal(first.input_ids, second.input_ids)
    assert torch.equal(first.selected, second.selected)
    assert not torch.equal(first.selected, other.selected)


@given(rate=st.one_of(st.floats(max_value=0.0), st.floats(min_value=1.0), st.just(float("nan"))))
def test_rate_outside_the_open_interval_is_one_sentence(rate):
    with pytest.raises(InputError, match=r"--mask-rate\) must be a number in \(0, 1\)"):
        MaskingRates(rate)


def test_shares_adding_past_one_are_refused():
    with pytest.raises(InputError, match="add up to more than 1"):
        MaskingRates(0.3, 0.8, 0.3)
