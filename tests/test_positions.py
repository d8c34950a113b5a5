"""The position_embedding_type registry: what each scheme owns and answers, learned ALiBi slopes,
and rotary tables built once per forward, also after loading on the meta device."""

import pytest
import torch
from torch import nn

import formulas
from mosaic_encoder import MosaicConfig, MosaicBertModel
from mosaic_encoder.padding import Packing
from mosaic_encoder.positions import POSITION_SCHEMES, AttentionPositions

CONFIG = MosaicConfig(vocab_size=40, hidden_size=16, num_hidden_layers=3, num_attention_heads=4,
                      intermediate_size=24, max_position_embeddings=12, hidden_dropout_prob=0.0,
                      attention_impl="sdpa")


def test_every_entry_has_a_formula():
    assert set(POSITION_SCHEMES) == set(formulas.POSITIONS)


@pytest.mark.parametrize("name", POSITION_SCHEMES)
def test_the_entry_answers_table_and_length(name):
    config = CONFIG.replace(position_embedding_type=name)
    model = MosaicBertModel(config)
    has_table = model.embeddings.position_embeddings is not None
    assert has_table == config.position_scheme.learned_table
    assert config.longest_input == (config.max_position_embeddings if has_table else None)


def test_learned_slopes_start_at_the_published_slopes_and_are_stored():
    config = CONFIG.replace(alibi_learned_slopes=True)
    model = MosaicBertModel(config)
    assert [name for name, _ in model.positions.named_parameters()] == ["log_slopes"]
    assert "positions.log_slopes" in model.state_dict()
    slopes = model.positions.slopes(torch.device("cpu"))
    torch.testing.assert_close(slopes.double(), formulas.alibi_published_slopes(4),
                               rtol=1e-6, atol=0)
    fixed = MosaicBertModel(CONFIG)
    assert "positions.log_slopes" not in fixed.state_dict()


def test_learned_slopes_stay_positive_whatever_the_parameter():
    model = MosaicBertModel(CONFIG.replace(alibi_learned_slopes=True))
    with torch.no_grad():
        model.positions.log_slopes.copy_(torch.tensor([-80.0, -3.0, 0.0, 5.0]))
    assert bool((model.positions.slopes(torch.device("cpu")) > 0).all())


def test_options_of_other_schemes_are_refused():
    from mosaic_encoder import ConfigError
    with pytest.raises(ConfigError, match="alibi_learned_slopes.*belongs to .*'alibi'.*'rope'"):
        CONFIG.replace(position_embedding_type="rope", alibi_learned_slopes=True)
    with pytest.raises(ConfigError, match="rope_theta.*belongs to .*'rope'"):
        CONFIG.replace(rope_theta=500.0)


def test_rope_needs_an_even_head_size():
    from mosaic_encoder import ConfigError
    with pytest.raises(ConfigError, match="must be even"):
        CONFIG.replace(position_embedding_type="rope", hidden_size=12, num_attention_heads=4)


def test_a_non_persistent_buffer_made_on_meta_stays_there():
    """Why the rotary tables are not a buffer: loading assigns only the state dict's tensors."""
    class WithBuffer(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("table", torch.arange(4.0), persistent=False)

    with torch.device("meta"):
        module = WithBuffer()
    module.load_state_dict({}, strict=True, assign=True)
    assert module.table.is_meta


def test_rope_model_built_on_meta_and_loaded_runs(tmp_path):
    config = CONFIG.replace(position_embedding_type="rope")
    model = MosaicBertModel(config).eval()
    with torch.device("meta"):
        loaded = MosaicBertModel(config)
    loaded.load_state_dict(model.state_dict(), strict=True, assign=True)
    loaded.eval()
    ids = torch.randint(1, 40, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        torch.testing.assert_close(loaded(ids).last_hidden_state, model(ids).last_hidden_state)


def test_rotary_tables_are_built_once_per_forward(monkeypatch):
    import mosaic_encoder.positions as positions

    calls = []

    def counted(*args):
        calls.append(args)
        return original(*args)

    original = positions.rotary_tables
    monkeypatch.setattr(positions, "rotary_tables", counted)
    model = MosaicBertModel(CONFIG.replace(position_embedding_type="rope")).eval()
    with torch.inference_mode():
        model(torch.randint(1, 40, (2, 9)))
    assert len(calls) == 1 and CONFIG.num_hidden_layers == 3


def test_attention_positions_rotate_nothing_without_tables():
    q, k = torch.randn(2, 3, 2, 4).unbind(0)
    same = AttentionPositions().rotate(q, k)
    assert same[0] is q and same[1] is k


@pytest.mark.parametrize("name", POSITION_SCHEMES)
def test_each_scheme_gives_attention_what_it_needs(name):
    config = CONFIG.replace(position_embedding_type=name)
    packing = Packing.from_mask(torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]]))
    given = config.position_scheme(config)(packing)
    assert (given.slopes is not None) == (name == "alibi")
    assert (given.cos is not None) == (name == "rope")
    if given.cos is not None:
        assert given.cos.shape == (7, config.head_dim // 2)


@pytest.mark.parametrize("attention", ["sdpa", "triton"])
def test_learned_slopes_stay_float32_in_a_bfloat16_model(tmp_path, attention):
    """Loaded in bfloat16 (or moved there), a model keeps its learned slopes float32: the kernel
    requires them so, and a rounded slope would change the model."""
    from mosaic_encoder import load_model
    from mosaic_encoder.pretraining.initialise import new_masked_lm
    from mosaic_encoder.pretraining.model_files import write_directory

    from helpers import WEIGHTS

    config = CONFIG.replace(vocab_size=30528, hidden_size=32, num_attention_heads=2,
                            alibi_learned_slopes=True)  # head size 16, the kernel's smallest
    model = new_masked_lm(config, seed=0)
    with torch.no_grad():
        model.bert.positions.log_slopes.add_(0.0123)
    write_directory(tmp_path / "model", model, WEIGHTS / "mosaic-tiny-mlm")
    loaded = load_model(tmp_path / "model", dtype="bfloat16", attention=attention)
    slopes = loaded.bert.positions.log_slopes
    assert slopes.dtype == torch.float32 and loaded.bert.embeddings.LayerNorm.weight.dtype == \
        torch.bfloat16
    assert torch.equal(slopes, model.bert.positions.log_slopes)
    with torch.inference_mode():
        out = loaded(torch.randint(1000, 3000, (2, 20))).logits
    assert out.dtype == torch.bfloat16 and bool(torch.isfinite(out).all())
    assert model.to(torch.bfloat16).bert.positions.log_slopes.dtype == torch.float32
