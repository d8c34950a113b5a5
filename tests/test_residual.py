"""The layer_norm_position registry: where the norm sits around a residual block."""

import pytest
import torch
from torch import nn

import formulas
from mosaic_encoder.residual import PLACEMENTS


def test_every_entry_has_a_formula():
    assert set(PLACEMENTS) == set(formulas.PLACEMENTS)


@pytest.mark.parametrize("name", PLACEMENTS)
def test_placement_equals_its_formula(name):
    generator = torch.Generator().manual_seed(0)
    norm = nn.LayerNorm(6)
    sublayer = nn.Linear(6, 6)
    x = torch.randn(4, 6, generator=generator)
    with torch.no_grad():
        torch.testing.assert_close(PLACEMENTS[name].residual(norm, sublayer, x),
                                   formulas.PLACEMENTS[name](norm, sublayer, x))


def test_only_pre_ln_adds_a_final_norm():
    assert {name: entry.final_norm for name, entry in PLACEMENTS.items()} == \
        {"post": False, "pre": True}
