"""The norm_type registry: every entry against its formula (tests/formulas.py)."""

import pytest
import torch

import formulas
from mosaic_encoder import MosaicConfig
from mosaic_encoder.normalization import NORMS, is_norm, make_norm

CONFIG = MosaicConfig(vocab_size=10, hidden_size=12, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=8, layer_norm_eps=1e-5)


def test_every_entry_has_a_formula():
    assert set(NORMS) == set(formulas.NORMS)


@pytest.mark.parametrize("norm_type", NORMS)
def test_norm_equals_its_formula(norm_type):
    module = make_norm(CONFIG.replace(norm_type=norm_type))
    assert is_norm(module) and module.eps == CONFIG.layer_norm_eps
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator))
    x = torch.randn(5, 12, generator=generator) * 3 + 1
    expected = formulas.norm(norm_type, module, x.double())
    torch.testing.assert_close(module(x).double(), expected, rtol=1e-5, atol=1e-5)


def test_rmsnorm_neither_centres_nor_has_a_bias():
    module = make_norm(CONFIG.replace(norm_type="rmsnorm"))
    assert [name for name, _ in module.named_parameters()] == ["weight"]
    x = torch.full((1, 12), 4.0)
    torch.testing.assert_close(module(x), torch.ones(1, 12), rtol=1e-6, atol=1e-6)
