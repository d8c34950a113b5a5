import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers import WEIGHTS
from mosaic_encoder import ConfigError, MosaicConfig

BASE = dict(vocab_size=100, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=128)


def test_reads_reference_config_and_ignores_remote_code_keys():
    config = MosaicConfig.from_json_file(WEIGHTS / "mosaic-tiny" / "config.json")
    assert (config.hidden_size, config.num_attention_heads, config.head_dim) == (192, 12, 16)
    assert config.position_embedding_type == "alibi"
    assert not hasattr(config, "auto_map")


@given(hidden=st.integers(1, 512), heads=st.integers(1, 64))
def test_hidden_must_divide_by_heads(hidden, heads):
    values = dict(BASE, hidden_size=hidden, num_attention_heads=heads)
    if hidden % heads:
        with pytest.raises(ConfigError, match="not divisible"):
            MosaicConfig.from_dict(values)
    else:
        assert MosaicConfig.from_dict(values).head_dim == hidden // heads


@pytest.mark.parametrize("field,value", [("hidden_size", 0), ("num_hidden_layers", -1),
                                         ("vocab_size", 2.5), ("intermediate_size", True),
                                         ("layer_norm_eps", 0), ("pad_token_id", 100),
                                         ("hidden_dropout_prob", 1.5)])
def test_impossible_values_name_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        MosaicConfig.from_dict(dict(BASE, **{field: value}))


def test_missing_field_is_named():
    values = dict(BASE)
    del values["num_attention_heads"]
    with pytest.raises(ConfigError, match="num_attention_heads"):
        MosaicConfig.from_dict(values)


def test_unreadable_config_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        MosaicConfig.from_json_file(tmp_path / "config.json")
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        MosaicConfig.from_json_file(tmp_path / "config.json")
    (tmp_path / "config.json").write_text(json.dumps([1, 2]))
    with pytest.raises(ConfigError, match="JSON object"):
        MosaicConfig.from_json_file(tmp_path / "config.json")


def test_unknown_attention_impl():
    with pytest.raises(ConfigError, match="attention implementation"):
        MosaicConfig.from_dict(dict(BASE, attention_impl="flash"))


@pytest.mark.parametrize("text,message", [
    ("[1, 2]", "must hold a JSON object, got an array"),
    ("null", "must hold a JSON object, got null"),
    ('{"vocab_size": null, "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 1, '
     '"intermediate_size": 8}', "'vocab_size' must be a positive integer, got None"),
    ('{"vocab_size": "10", "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 1, '
     '"intermediate_size": 8}', "'vocab_size' must be a positive integer, got '10'"),
    ('{"vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 1, '
     '"intermediate_size": 8, "layer_norm_eps": Infinity}', "positive finite number, got inf"),
    ('{"vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 1, '
     '"intermediate_size": 8, "layer_norm_eps": NaN}', "positive finite number, got nan"),
    ('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}", "nests JSON values too deeply"),
    ('{"vocab_size": ' + "7" * 4500 + "}", "number too large to read"),
    ('{"vocab_size": -' + "7" * 4000 + ', "hidden_size": 8, "num_hidden_layers": 1, '
     '"num_attention_heads": 1, "intermediate_size": 8}', "got a 13288-bit integer"),
])
def test_config_json_of_the_wrong_shape_is_one_sentence(tmp_path, text, message):
    (tmp_path / "config.json").write_text(text)
    with pytest.raises(ConfigError, match=message) as error:
        MosaicConfig.from_json_file(tmp_path / "config.json")
    assert len(str(error.value)) < 300


VARIANTS = [("alibi", "glu", "post"), ("absolute", "gelu", "pre"), ("alibi", "gelu", "pre"),
            ("absolute", "glu", "post")]


@pytest.mark.parametrize("positions,feed_forward,norm", VARIANTS)
def test_variant_fields_as_written_are_what_is_built(positions, feed_forward, norm):
    config = MosaicConfig.from_dict(dict(BASE, position_embedding_type=positions,
                                         feed_forward=feed_forward, layer_norm_position=norm))
    assert (config.position_embedding_type, config.feed_forward,
            config.layer_norm_position) == (positions, feed_forward, norm)
    assert MosaicConfig.from_dict(config.architecture_values()) == config


@pytest.mark.parametrize("field,value", [("position_embedding_type", "rotary"),
                                         ("feed_forward", "swiglu"),
                                         ("layer_norm_position", "sandwich")])
def test_unknown_variant_values_name_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        MosaicConfig.from_dict(dict(BASE, **{field: value}))


def test_explicit_feed_forward_wins_over_upstream_keys():
    config = MosaicConfig.from_dict(dict(BASE, alibi_starting_size=512, feed_forward="gelu"))
    assert (config.position_embedding_type, config.feed_forward) == ("alibi", "gelu")


def test_upstream_config_without_our_fields_is_mosaicbert():
    """Upstream's position_embedding_type "absolute" is a leftover beside alibi_starting_size."""
    config = MosaicConfig.from_dict(dict(BASE, alibi_starting_size=512,
                                         position_embedding_type="absolute"))
    assert (config.position_embedding_type, config.feed_forward) == ("alibi", "glu")


def test_explicit_absolute_positions_beside_alibi_keys_are_a_contradiction():
    with pytest.raises(ConfigError, match="alibi_starting_size.*'absolute'; remove one"):
        MosaicConfig.from_dict(dict(BASE, alibi_starting_size=512, feed_forward="glu",
                                    position_embedding_type="absolute"))


def test_classic_config_without_our_fields_is_classic_bert():
    config = MosaicConfig.from_dict(dict(BASE))
    assert (config.position_embedding_type, config.feed_forward,
            config.layer_norm_position) == ("absolute", "gelu", "post")


def test_architecture_values_leave_out_run_time_choices():
    values = MosaicConfig.from_dict(dict(BASE)).architecture_values()
    assert "attention_impl" not in values and "attention_window" not in values
