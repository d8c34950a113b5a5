"""The checkpoint directory: opening it, its sentence-transformers layout, indexes, headers,
layouts, geometry, mismatch reports and the QKV fuse/split."""

import json
import os
import time

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

import mosaic_encoder as me
from helpers import (WEIGHTS, copy_checkpoint, move_transformer_to_sub_directory,
                     write_with_duplicate_key)
from mosaic_encoder import CheckpointError, ConfigError
from mosaic_encoder.checkpoint import (CheckpointDir, Layout, Pipeline, build_model,
                                       detect_layout, expected_tensors, fuse_qkv, mismatch_report,
                                       read_header, read_tensor_index, split_qkv, stored_geometry,
                                       summarise, summarise_names)

TINY = WEIGHTS / "mosaic-tiny"


def shard(tmp_path, weight_map=None, files=None, name="sharded"):
    """A sharded copy of mosaic-tiny: two shard files and an index (``weight_map`` replaces it)."""
    directory = copy_checkpoint(tmp_path, name=name)
    state = load_file(directory / "model.safetensors")
    (directory / "model.safetensors").unlink()
    names = sorted(state)
    halves = {"a.safetensors": names[: len(names) // 2], "b.safetensors": names[len(names) // 2:]}
    for file, part in halves.items():
        save_file({n: state[n] for n in part}, directory / file)
    index = {"weight_map": {n: f for f, part in halves.items() for n in part}}
    text = json.dumps(index if weight_map is None else weight_map) if files is None else files
    (directory / "model.safetensors.index.json").write_text(text)
    return directory


def test_single_and_sharded_indexes_agree(tmp_path):
    single = read_tensor_index(TINY)
    sharded = read_tensor_index(shard(tmp_path))
    assert {n: i.shape for n, i in single.items()} == {n: i.shape for n, i in sharded.items()}
    assert {i.file.name for i in sharded.values()} == {"a.safetensors", "b.safetensors"}


@pytest.mark.parametrize("index,message", [
    ([1, 2], "must hold a JSON object, got an array"),
    ({"weight_map": None}, "has no weight_map object"),
    ({"weight_map": []}, "has no weight_map object"),
    ({"weight_map": {"embeddings.word_embeddings.weight": None}}, "not a shard file name"),
    ({"weight_map": {"embeddings.word_embeddings.weight": 3}}, "not a shard file name"),
    ({"weight_map": {"x": "../../etc/passwd"}}, "outside the checkpoint directory"),
    ({"weight_map": {"x": "/etc/hostname"}}, "outside the checkpoint directory"),
    ({"weight_map": {"x": "nope.safetensors"}}, "nope.safetensors does not exist"),
])
def test_malformed_shard_indexes(tmp_path, index, message):
    with pytest.raises(CheckpointError, match=message):
        read_tensor_index(shard(tmp_path, weight_map=index))


@pytest.mark.parametrize("text,message", [
    ("[" * 100_000 + "]" * 100_000, "nests JSON values too deeply"),
    ('{"weight_map": {"x": ' + "9" * 5000 + "}}", "number too large to read"),
    ('{"weight_map": ', "not valid JSON"),
])
def test_shard_index_that_json_cannot_hold(tmp_path, text, message):
    with pytest.raises(CheckpointError, match=message):
        read_tensor_index(shard(tmp_path, files=text))


def test_a_fifo_is_refused_without_blocking(tmp_path):
    directory = shard(tmp_path)
    (directory / "b.safetensors").unlink()
    os.mkfifo(directory / "b.safetensors")
    with pytest.raises(CheckpointError, match="b.safetensors is not a regular file"):
        read_tensor_index(directory)
    config = copy_checkpoint(tmp_path, name="fifo-config")
    (config / "config.json").unlink()
    os.mkfifo(config / "config.json")
    with pytest.raises(ConfigError, match="config.json is not a regular file"):
        me.load_model(config)


def test_a_symlink_out_of_the_checkpoint_is_refused(tmp_path):
    directory = copy_checkpoint(tmp_path)
    outside = tmp_path / "elsewhere.safetensors"
    (directory / "model.safetensors").rename(outside)
    (directory / "model.safetensors").symlink_to(outside)
    with pytest.raises(CheckpointError, match="outside the checkpoint directory"):
        read_tensor_index(directory)


def test_a_symlink_inside_the_checkpoint_is_followed(tmp_path):
    directory = copy_checkpoint(tmp_path)
    (directory / "model.safetensors").rename(directory / "blob")
    (directory / "model.safetensors").symlink_to(directory / "blob")
    assert set(read_tensor_index(directory)) == set(read_tensor_index(TINY))


def test_a_duplicate_header_key_is_refused(tmp_path):
    write_with_duplicate_key(tmp_path / "dup.safetensors")
    with pytest.raises(CheckpointError, match="lists tensor w twice"):
        read_header(tmp_path / "dup.safetensors")


@pytest.mark.parametrize("field,value,stored", [
    ("num_hidden_layers", 10**9, "have 2"),
    ("num_hidden_layers", 10**5, "have 2"),
    ("hidden_size", 2**40, "have 192"),
    ("vocab_size", 2**62, "have 30528"),
])
def test_config_geometry_is_checked_before_building(tmp_path, field, value, stored):
    """A config asking for a huge model on small weights is one short sentence, at once."""
    def edit(values):
        values[field] = value
        if field == "hidden_size":
            values["num_attention_heads"] = 1
    directory = copy_checkpoint(tmp_path, config=edit)
    start = time.process_time()
    with pytest.raises(CheckpointError) as error:
        me.load_model(directory)
    message = str(error.value)
    assert f"{field} is {value} but the weights {stored}" in message
    assert len(message) < 400 and "\n" not in message
    # Structural: nothing of the requested size was built (meta building of 1e9 layers took 412 s).
    assert time.process_time() - start < 60


def test_mismatch_lists_are_capped(tmp_path):
    def edit(state):
        for name in [n for n in state if ".attention.output." in n]:
            state[name.replace(".attention.output.", ".attention.out.")] = state.pop(name)
    with pytest.raises(CheckpointError) as error:
        me.load_model(copy_checkpoint(tmp_path, tensors=edit))
    message = str(error.value)
    assert " more." in message and len(message) < 2000


def test_detect_layout_and_expected_tensors():
    found = read_tensor_index(WEIGHTS / "mosaic-tiny-mlm")
    layout = detect_layout(set(found), "mlm")
    assert layout == Layout(masked_lm=True, prefix="bert.", pooler=False)
    config = me.MosaicConfig.from_json_file(WEIGHTS / "mosaic-tiny-mlm" / "config.json")
    with torch.device("meta"):
        model = build_model(config, layout)
    assert isinstance(model, me.MosaicBertForMaskedLM)
    expected = expected_tensors(model, layout)
    assert mismatch_report(expected, found, layout.optional) == []
    assert stored_geometry(found, layout) == {
        "vocab_size": config.vocab_size, "hidden_size": config.hidden_size,
        "type_vocab_size": config.type_vocab_size, "num_hidden_layers": config.num_hidden_layers,
        "intermediate_size": config.intermediate_size}


def test_unfused_layout_expects_query_key_value():
    layout = Layout(masked_lm=False, prefix="", pooler=False, fused_qkv=False)
    config = me.MosaicConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1,
                             num_attention_heads=2, intermediate_size=16)
    with torch.device("meta"):
        expected = expected_tensors(build_model(config, layout), layout)
    assert expected["encoder.layer.0.attention.self.query.weight"] == (8, 8)
    assert not any("Wqkv" in name for name in expected)


def test_summaries():
    assert summarise(list("abcdef"), 3) == "a, b, c and 3 more"
    names = [f"encoder.layer.{i}.{part}" for i in range(2, 12) for part in ("a", "b")]
    assert summarise_names(names) == "encoder.layer.2-11.* (2 each)"


# --- the directory ----------------------------------------------------------------------------


def test_open_reads_layout_config_index_and_pipeline():
    checkpoint = CheckpointDir.open(TINY)
    assert checkpoint.path == TINY and checkpoint.transformer_dir == TINY
    assert checkpoint.layout == Layout(masked_lm=False, prefix="", pooler=True)
    assert checkpoint.config_values["hidden_size"] == 192
    assert checkpoint.config().hidden_size == 192
    assert checkpoint.config(attention_impl="sdpa").attention_impl == "sdpa"
    assert set(checkpoint.tensors) == set(read_tensor_index(TINY))
    assert checkpoint.pipeline.normalize and checkpoint.pipeline.max_seq_length == 4096
    assert CheckpointDir.open(checkpoint) is checkpoint
    mlm = CheckpointDir.open(WEIGHTS / "mosaic-tiny-mlm")
    assert mlm.layout.masked_lm and mlm.pipeline == Pipeline(WEIGHTS / "mosaic-tiny-mlm",
                                                             mlm.pipeline.pooling, False, None,
                                                             False)


def test_open_follows_modules_json_to_a_transformer_sub_directory(tmp_path):
    directory = copy_checkpoint(tmp_path)
    sub = move_transformer_to_sub_directory(directory)
    checkpoint = CheckpointDir.open(directory)
    assert checkpoint.transformer_dir == sub
    assert checkpoint.config_file == directory / "0_Transformer" / "config.json"
    assert me.load_model(directory).config.hidden_size == 192


def test_a_missing_directory_is_one_sentence(tmp_path):
    with pytest.raises(CheckpointError, match=r"^checkpoint directory .*nope does not exist\.$"):
        CheckpointDir.open(tmp_path / "nope")


def test_config_json_is_read_through_the_config_checks(tmp_path):
    directory = copy_checkpoint(tmp_path)
    (directory / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ConfigError, match="nests JSON values too deeply"):
        CheckpointDir.open(directory)


@pytest.mark.parametrize("name,error", [("config.json", ConfigError),
                                        ("tokenizer.json", CheckpointError),
                                        ("vocab.txt", CheckpointError)])
def test_a_file_reached_through_a_symlink_out_of_the_checkpoint_is_refused(tmp_path, name, error):
    directory = copy_checkpoint(tmp_path)
    outside = tmp_path / name
    (directory / name).rename(outside)
    (directory / name).symlink_to(outside)
    with pytest.raises(error, match=f"{name} resolves to .* outside the checkpoint directory"):
        CheckpointDir.open(directory)


# --- QKV fuse and split ------------------------------------------------------------------------


@given(st.integers(1, 8), st.integers(1, 5), st.integers(0, 2**16))
def test_split_then_fuse_is_the_identity(features, inputs, seed):
    generator = torch.Generator().manual_seed(seed)
    state = {"encoder.layer.0.attention.self.Wqkv.weight":
             torch.randn(3 * features, inputs, generator=generator),
             "encoder.layer.0.attention.self.Wqkv.bias": torch.randn(3 * features,
                                                                     generator=generator),
             "embeddings.word_embeddings.weight": torch.randn(4, inputs, generator=generator)}
    split = split_qkv(state)
    assert sorted(split) == sorted(["embeddings.word_embeddings.weight"] + [
        f"encoder.layer.0.attention.self.{part}.{kind}" for part in ("query", "key", "value")
        for kind in ("weight", "bias")])
    packed = state["encoder.layer.0.attention.self.Wqkv.weight"]
    # [Q | K | V] along the output features: the key is the middle third of the rows.
    assert torch.equal(split["encoder.layer.0.attention.self.key.weight"],
                       packed[features:2 * features])
    fused = fuse_qkv(split)
    assert fused.keys() == state.keys()
    assert all(torch.equal(fused[n], state[n]) for n in state)


# --- the sentence-transformers layout ------------------------------------------------------------


@pytest.mark.parametrize("file,content,message", [
    ("modules.json", {"type": "x"}, "must hold a JSON array of modules, got dict"),
    ("modules.json", [None], "entry 1 is not a JSON object"),
    ("modules.json", [{"type": None, "path": ""}], "needs string 'type' and 'path'"),
    ("modules.json", [{"type": "sentence_transformers.models.Transformer", "path": 3}],
     "needs string 'type' and 'path'"),
    ("modules.json", [{"type": "sentence_transformers.models.Pooling", "path": "../.."}],
     "outside the checkpoint directory"),
    ("modules.json", [{"type": "sentence_transformers.models.Transformer", "path": "/"}],
     "outside the checkpoint directory"),
    ("modules.json", [{"type": "sentence_transformers.models.Transformer", "path": "nope"}],
     "names the transformer directory .* which does not exist"),
    ("modules.json", "[" * 3000 + "]" * 3000, "nests JSON values too deeply"),
    ("modules.json", [{"type": "sentence_transformers.models.Pooling", "path": "1_Pooling\u0000x"}],
     "holds a NUL byte"),
    ("modules.json", [{"type": "evil\n\u001b[31mTraceback", "path": ""}],
     r"module type 'evil\\n\\x1b\[31mTraceback'"),
    ("1_Pooling/config.json", [], "must hold a JSON object, got an array"),
    ("sentence_bert_config.json", [1], "must hold a JSON object"),
    ("sentence_bert_config.json", {"max_seq_length": "512"}, "max_seq_length must be an integer"),
    ("sentence_bert_config.json", {"max_seq_length": 1}, "max_seq_length must be an integer"),
    ("sentence_bert_config.json", {"max_seq_length": int("9" * 4000)}, "a 13288-bit integer"),
    ("sentence_bert_config.json", '{"max_seq_length": ' + "9" * 5000 + "}", "number too large"),
    ("sentence_bert_config.json", {"do_lower_case": None}, "do_lower_case must be true or false"),
])
def test_malformed_sentence_transformers_files_are_one_sentence(tmp_path, file, content, message):
    directory = copy_checkpoint(tmp_path)
    (directory / file).write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(CheckpointError, match=message):
        Pipeline.from_directory(directory)


def test_a_fifo_in_place_of_a_module_config_is_refused(tmp_path):
    directory = copy_checkpoint(tmp_path)
    (directory / "1_Pooling" / "config.json").unlink()
    os.mkfifo(directory / "1_Pooling" / "config.json")
    with pytest.raises(CheckpointError, match="is not a regular file"):
        Pipeline.from_directory(directory)
