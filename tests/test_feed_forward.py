"""The feed_forward registry: every entry, with both norms and both placements, against its
formula (tests/formulas.py)."""

import itertools

import pytest
import torch

import formulas
from mosaic_encoder import MosaicConfig
from mosaic_encoder.feed_forward import FEED_FORWARDS
from mosaic_encoder.normalization import NORMS
from mosaic_encoder.residual import PLACEMENTS

CONFIG = MosaicConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=12, hidden_dropout_prob=0.0, layer_norm_eps=1e-6)


def test_every_entry_has_a_formula():
    assert set(FEED_FORWARDS) == set(formulas.FEED_FORWARDS)


@pytest.mark.parametrize("name,norm_type,placement",
                         list(itertools.product(FEED_FORWARDS, NORMS, PLACEMENTS)))
def test_block_equals_its_formula(name, norm_type, placement):
    config = CONFIG.replace(feed_forward=name, norm_type=norm_type, layer_norm_position=placement)
    block = config.feed_forward_class(config).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in block.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
    x = torch.randn(5, 8, generator=generator)
    norm_module = formulas.feed_forward_norm(name, block)
    expected = formulas.PLACEMENTS[placement](
        lambda h: formulas.norm(norm_type, norm_module, h),
        lambda h: formulas.feed_forward(name, block, h), x)
    with torch.no_grad():
        torch.testing.assert_close(block(x), expected, rtol=1e-5, atol=1e-5)


def test_glu_first_half_is_the_gate():
    """Swapping gate and value changes the result: the order is part of the formula."""
    block = CONFIG.feed_forward_class(CONFIG).eval()
    torch.nn.init.normal_(block.gated_layers.weight, generator=torch.Generator().manual_seed(2))
    x = torch.randn(5, 8, generator=torch.Generator().manual_seed(3))
    gate, value = (x @ block.gated_layers.weight.T).chunk(2, -1)
    swapped = block.layernorm(x + formulas.gelu_erf(value) * gate @ block.wo.weight.T + block.wo.bias)
    with torch.no_grad():
        assert not torch.allclose(block(x), swapped, atol=1e-3)


@pytest.mark.parametrize("name", FEED_FORWARDS)
def test_hidden_act_names_the_activation(name):
    assert FEED_FORWARDS[name].hidden_act
