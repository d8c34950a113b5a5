"""The building blocks, each against its definition written out in plain tensor operations."""

import pytest
import torch
import torch.nn.functional as F

from mosaic_encoder import MosaicConfig
from mosaic_encoder.config import CLASSIC_BERT
from mosaic_encoder.layers import FEED_FORWARD_BLOCK, Embeddings, Encoder, EncoderLayer
from mosaic_encoder.padding import Packing
from mosaic_encoder.positions import AttentionPositions

ALIBI = MosaicConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=24, hidden_dropout_prob=0.0)
CLASSIC = ALIBI.replace(**CLASSIC_BERT, max_position_embeddings=20)
SLOPES = AttentionPositions(slopes=torch.tensor([0.5, 0.25]))


def seeded(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """``module`` in eval mode with every parameter drawn from a seeded normal."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
    return module.eval()


def test_embeddings_without_positions_are_word_plus_type():
    embeddings = seeded(Embeddings(ALIBI))
    assert embeddings.position_embeddings is None
    ids, types = torch.tensor([3, 7, 0, 49]), torch.tensor([0, 1, 1, 0])
    summed = embeddings.word_embeddings.weight[ids] + embeddings.token_type_embeddings.weight[types]
    expected = F.layer_norm(summed, (16,), embeddings.LayerNorm.weight, embeddings.LayerNorm.bias,
                            ALIBI.layer_norm_eps)
    torch.testing.assert_close(embeddings(ids, types), expected)


def test_embeddings_with_positions_add_the_position_rows():
    embeddings = seeded(Embeddings(CLASSIC))
    ids, types = torch.tensor([3, 7, 9, 4]), torch.tensor([0, 0, 1, 1])
    positions = torch.tensor([0, 1, 0, 19])  # two packed sequences
    summed = (embeddings.word_embeddings.weight[ids] + embeddings.token_type_embeddings.weight[types]
              + embeddings.position_embeddings.weight[positions])
    expected = F.layer_norm(summed, (16,), embeddings.LayerNorm.weight, embeddings.LayerNorm.bias,
                            CLASSIC.layer_norm_eps)
    torch.testing.assert_close(embeddings(ids, types, positions), expected)


@pytest.mark.parametrize("config", [ALIBI, CLASSIC], ids=["glu", "gelu"])
def test_blocked_feed_forward_equals_unblocked(config):
    """Above FEED_FORWARD_BLOCK tokens the layer runs its feed-forward block by block; the result
    equals the feed-forward on all tokens at once."""
    layer = seeded(EncoderLayer(config.replace(attention_impl="sdpa")))
    tokens = FEED_FORWARD_BLOCK + 37
    hidden = torch.randn(tokens, 16, generator=torch.Generator().manual_seed(2))
    packing = Packing.from_mask(torch.ones(1, tokens, dtype=torch.long))
    positions = model_positions(config, packing)
    with torch.inference_mode():
        blocked = layer(hidden, packing, positions)
        attended = layer.attention.self.attend(*layer.before_attention(hidden, positions), packing,
                                               positions)
        unblocked = layer.after_attention(hidden, attended)
    torch.testing.assert_close(blocked, unblocked, rtol=0, atol=1e-6)


@pytest.mark.parametrize("config", [ALIBI, CLASSIC], ids=["glu", "gelu"])
def test_pre_ln_layer_normalises_each_sublayer_input(config):
    """Pre-LN: ``x + attention(LN(x))`` then ``y + ffn(LN(y))``, with the post-LN layer's modules."""
    pre = config.replace(layer_norm_position="pre", attention_impl="sdpa")
    layer = seeded(EncoderLayer(pre))
    hidden = torch.randn(7, 16, generator=torch.Generator().manual_seed(3))
    packing = Packing.from_mask(torch.ones(1, 7, dtype=torch.long))
    positions = model_positions(config, packing)
    attention = layer.attention
    norm = attention.output.LayerNorm
    mixed = attention.self.attend(*attention.self.project(norm(hidden), positions), packing,
                                  positions)
    after_attention = hidden + attention.output.dense(mixed)
    mlp = layer.mlp
    if hasattr(mlp, "gated_layers"):
        gate, value = (mlp.layernorm(after_attention) @ mlp.gated_layers.weight.T).chunk(2, -1)
        expected = after_attention + mlp.wo(F.gelu(gate) * value)
    else:
        inner = F.gelu(mlp.intermediate.dense(mlp.output.LayerNorm(after_attention)))
        expected = after_attention + mlp.output.dense(inner)
    with torch.inference_mode():
        torch.testing.assert_close(layer(hidden, packing, positions), expected)


def test_pre_ln_encoder_ends_with_a_final_layer_norm():
    encoder = seeded(Encoder(ALIBI.replace(layer_norm_position="pre", attention_impl="sdpa")))
    post = Encoder(ALIBI)
    assert encoder.final_layernorm is not None and post.final_layernorm is None
    hidden = torch.randn(5, 16, generator=torch.Generator().manual_seed(4))
    packing = Packing.from_mask(torch.ones(1, 5, dtype=torch.long))
    with torch.inference_mode():
        out = encoder(hidden, packing, SLOPES)
        expected = encoder.final_layernorm(encoder.layer[0](hidden, packing, SLOPES))
    torch.testing.assert_close(out, expected)


def test_classic_feed_forward_keeps_berts_checkpoint_names():
    """Every feed-forward lives at ``mlp``; classic BERT's is stored beside ``attention`` under
    its published names, and loads back from them strictly."""
    layer = seeded(EncoderLayer(CLASSIC))
    state = layer.state_dict()
    assert {"intermediate.dense.weight", "output.dense.weight", "output.LayerNorm.bias"} <= \
        set(state)
    assert not any(name.startswith("mlp.") for name in state)
    fresh = EncoderLayer(CLASSIC)
    fresh.load_state_dict(state, strict=True)
    assert torch.equal(fresh.mlp.output.dense.weight, layer.mlp.output.dense.weight)


def model_positions(config: MosaicConfig, packing: Packing) -> AttentionPositions:
    """The positions a model of ``config`` gives its layers for ``packing``."""
    return config.position_scheme(config)(packing)
