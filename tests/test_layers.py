"""The building blocks, each against its definition written out in plain tensor operations."""

import pytest
import torch
import torch.nn.functional as F

from mosaic_encoder import MosaicConfig
from mosaic_encoder.layers import FEED_FORWARD_BLOCK, Embeddings, EncoderLayer, GatedMLP
from mosaic_encoder.padding import Packing

ALIBI = MosaicConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=24, hidden_dropout_prob=0.0)
CLASSIC = ALIBI.replace(position_embedding_type="absolute", feed_forward="gelu",
                        max_position_embeddings=20)


def seeded(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """``module`` in eval mode with every parameter drawn from a seeded normal."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
    return module.eval()


def test_glu_first_half_is_the_gate_second_half_the_value():
    mlp = seeded(GatedMLP(ALIBI))
    x = torch.randn(5, 16, generator=torch.Generator().manual_seed(1))
    projected = x @ mlp.gated_layers.weight.T
    gate, value = projected[:, :24], projected[:, 24:]
    expected = F.layer_norm(F.gelu(gate) * value @ mlp.wo.weight.T + mlp.wo.bias + x, (16,),
                            mlp.layernorm.weight, mlp.layernorm.bias, ALIBI.layer_norm_eps)
    torch.testing.assert_close(mlp(x), expected)
    swapped = F.layer_norm(F.gelu(value) * gate @ mlp.wo.weight.T + mlp.wo.bias + x, (16,),
                           mlp.layernorm.weight, mlp.layernorm.bias, ALIBI.layer_norm_eps)
    assert not torch.allclose(mlp(x), swapped, atol=1e-3)


def test_embeddings_without_positions_are_word_plus_type():
    embeddings = seeded(Embeddings(ALIBI))
    assert not hasattr(embeddings, "position_embeddings")
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
    slopes = torch.tensor([0.5, 0.25]) if config.uses_alibi else None
    with torch.inference_mode():
        blocked = layer(hidden, packing, slopes)
        attended = layer.attention(hidden, packing, slopes)
        unblocked = layer.feed_forward(attended)
    torch.testing.assert_close(blocked, unblocked, rtol=0, atol=1e-6)


@pytest.mark.parametrize("config", [ALIBI, CLASSIC], ids=["glu", "gelu"])
def test_pre_ln_layer_normalises_each_sublayer_input(config):
    """Pre-LN: ``x + attention(LN(x))`` then ``y + ffn(LN(y))``, with the post-LN layer's modules."""
    pre = config.replace(layer_norm_position="pre", attention_impl="sdpa")
    layer = seeded(EncoderLayer(pre))
    hidden = torch.randn(7, 16, generator=torch.Generator().manual_seed(3))
    packing = Packing.from_mask(torch.ones(1, 7, dtype=torch.long))
    slopes = torch.tensor([0.5, 0.25]) if config.uses_alibi else None
    attention = layer.attention
    norm = attention.output.LayerNorm
    mixed = attention.self(norm(hidden), packing, slopes)
    after_attention = hidden + attention.output.dense(mixed)
    if config.feed_forward == "glu":
        mlp = layer.mlp
        gate, value = (mlp.layernorm(after_attention) @ mlp.gated_layers.weight.T).chunk(2, -1)
        expected = after_attention + mlp.wo(F.gelu(gate) * value)
    else:
        inner = F.gelu(layer.intermediate.dense(layer.output.LayerNorm(after_attention)))
        expected = after_attention + layer.output.dense(inner)
    with torch.inference_mode():
        torch.testing.assert_close(layer(hidden, packing, slopes), expected)


def test_pre_ln_encoder_ends_with_a_final_layer_norm():
    from mosaic_encoder.layers import Encoder

    encoder = seeded(Encoder(ALIBI.replace(layer_norm_position="pre", attention_impl="sdpa")))
    post = Encoder(ALIBI)
    assert hasattr(encoder, "final_layernorm") and not hasattr(post, "final_layernorm")
    hidden = torch.randn(5, 16, generator=torch.Generator().manual_seed(4))
    packing = Packing.from_mask(torch.ones(1, 5, dtype=torch.long))
    slopes = torch.tensor([0.5, 0.25])
    with torch.inference_mode():
        out = encoder(hidden, packing, slopes)
        expected = encoder.final_layernorm(encoder.layer[0](hidden, packing, slopes))
    torch.testing.assert_close(out, expected)
