"""Every published layout loads; every malformed checkpoint is one clear error."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch.utils._python_dispatch import TorchDispatchMode

import mosaic_encoder as me
from helpers import WEIGHTS
from mosaic_encoder import CheckpointError, ConfigError

IDS = torch.tensor([[101, 7592, 2088, 102, 0], [101, 2023, 102, 0, 0]])
MASK = (IDS != 0).long()


def make_checkpoint(tmp_path, source, edit=None, name="ckpt"):
    """Copy ``source``'s config into tmp_path/name with the (edited) tensors."""
    directory = tmp_path / name
    directory.mkdir()
    shutil.copy(WEIGHTS / source / "config.json", directory / "config.json")
    tensors = load_file(WEIGHTS / source / "model.safetensors")
    if edit:
        edit(tensors)
    save_file(tensors, directory / "model.safetensors")
    return directory


def hidden(model):
    with torch.inference_mode():
        return model(IDS, MASK).last_hidden_state


@pytest.fixture(scope="module")
def reference():
    return hidden(me.load_model(WEIGHTS / "mosaic-tiny"))


def test_lodestone_layout(reference):
    model = me.load_model(WEIGHTS / "mosaic-tiny")
    assert isinstance(model, me.MosaicBertModel) and model.pooler is not None
    assert next(model.parameters()).dtype == torch.float32  # stored bfloat16, cast


def test_masked_lm_layout_ties_decoder():
    model = me.load_model(WEIGHTS / "mosaic-tiny-mlm")
    assert isinstance(model, me.MosaicBertForMaskedLM)
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight


def test_masked_lm_without_decoder_weight(tmp_path):
    directory = make_checkpoint(tmp_path, "mosaic-tiny-mlm",
                                lambda t: t.pop("cls.predictions.decoder.weight"))
    model = me.load_model(directory)
    full = me.load_model(WEIGHTS / "mosaic-tiny-mlm")
    with torch.inference_mode():
        assert torch.equal(model(IDS, MASK).logits, full(IDS, MASK).logits)


def test_untied_decoder_is_rejected(tmp_path):
    def edit(t):
        t["cls.predictions.decoder.weight"] = t["cls.predictions.decoder.weight"] + 1
    directory = make_checkpoint(tmp_path, "mosaic-tiny-mlm", edit)
    with pytest.raises(CheckpointError, match="tied"):
        me.load_model(directory)


@pytest.mark.parametrize("prefix", ["", "bert."])
def test_bare_encoder_layouts(tmp_path, reference, prefix):
    def edit(t):
        for key in list(t):
            value = t.pop(key)
            if not key.startswith("pooler."):
                t[prefix + key] = value
    model = me.load_model(make_checkpoint(tmp_path, "mosaic-tiny", edit))
    assert model.pooler is None
    torch.testing.assert_close(hidden(model), reference, rtol=0, atol=0)


def test_sharded_checkpoint(tmp_path, reference):
    directory = tmp_path / "sharded"
    directory.mkdir()
    shutil.copy(WEIGHTS / "mosaic-tiny" / "config.json", directory)
    tensors = load_file(WEIGHTS / "mosaic-tiny" / "model.safetensors")
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[: len(names) // 2],
              "model-00002-of-00002.safetensors": names[len(names) // 2:]}
    weight_map = {}
    for file, keys in shards.items():
        save_file({k: tensors[k] for k in keys}, directory / file)
        weight_map.update({k: file for k in keys})
    (directory / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    torch.testing.assert_close(hidden(me.load_model(directory)), reference, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_stored_dtype_is_cast(dtype):
    model = me.load_model(WEIGHTS / "mosaic-tiny", dtype=dtype)
    assert {p.dtype for p in model.parameters()} == {dtype}


def test_missing_extra_and_misshapen_tensors_are_all_listed(tmp_path):
    def edit(t):
        del t["encoder.layer.0.mlp.wo.bias"]
        t["encoder.layer.9.stray.weight"] = torch.zeros(2)
        t["pooler.dense.weight"] = torch.zeros(192, 100)
    with pytest.raises(CheckpointError) as error:
        me.load_model(make_checkpoint(tmp_path, "mosaic-tiny", edit))
    message = str(error.value)
    assert "missing encoder.layer.0.mlp.wo.bias (expected shape [192])" in message
    assert "unexpected encoder.layer.9.stray.weight (found shape [2])" in message
    assert "wrong shape for pooler.dense.weight (expected [192, 192], found [192, 100])" in message


def test_a_forged_tensor_name_is_escaped_in_the_message(tmp_path):
    forged = "x\n\x1b[31mTraceback (most recent call last):"
    with pytest.raises(CheckpointError) as error:
        me.load_model(make_checkpoint(tmp_path, "mosaic-tiny",
                                      lambda t: t.update({forged: torch.zeros(2)})))
    message = str(error.value)
    assert "\n" not in message and "\x1b" not in message
    assert "unexpected x\\n\\x1b[31mTraceback" in message


def test_truncated_safetensors(tmp_path):
    directory = make_checkpoint(tmp_path, "mosaic-tiny")
    data = (directory / "model.safetensors").read_bytes()
    (directory / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="model.safetensors is truncated"):
        me.load_model(directory)


def test_garbage_safetensors(tmp_path):
    directory = make_checkpoint(tmp_path, "mosaic-tiny")
    (directory / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="model.safetensors"):
        me.load_model(directory)


def test_missing_things(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        me.load_model(tmp_path / "nowhere")
    directory = make_checkpoint(tmp_path, "mosaic-tiny")
    (directory / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="has no model.safetensors"):
        me.load_model(directory)
    (directory / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(CheckpointError, match="convert"):
        me.load_model(directory)
    (directory / "config.json").unlink()
    with pytest.raises(ConfigError, match="config.json does not exist"):
        me.load_model(directory)


def test_other_architecture_is_rejected(tmp_path):
    def edit(t):
        for key in [k for k in t if "Wqkv" in k]:
            t[key.replace("Wqkv", "qkv_proj")] = t.pop(key)
    with pytest.raises(CheckpointError, match="neither attention.self.Wqkv nor"):
        me.load_model(make_checkpoint(tmp_path, "mosaic-tiny", edit))
    with pytest.raises(CheckpointError, match="not a BERT-family checkpoint"):
        me.load_model(make_checkpoint(tmp_path, "mosaic-tiny", lambda t: t.clear() or
                                      t.update(weight=torch.zeros(1)), name="other"))


class ShapeRecorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.shapes = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(tensor, torch.Tensor):
                self.shapes.append(tuple(tensor.shape))
        return out


def test_loading_builds_no_attention_bias():
    """No (heads, S, S) tensor appears while loading (upstream builds 768 MiB of them)."""
    recorder = ShapeRecorder()
    with recorder:
        me.load_model(WEIGHTS / "mosaic-tiny")
    assert recorder.shapes
    assert not [s for s in recorder.shapes if len(s) == 3 and s[0] == 12 and s[1] == s[2]]


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused_naming_the_tensor(tmp_path, value):
    def edit(t):
        t["encoder.layer.1.mlp.wo.weight"][0, 0] = value
    with pytest.raises(CheckpointError, match="tensor encoder.layer.1.mlp.wo.weight in .* holds "
                                              "NaN or infinite values"):
        me.load_model(make_checkpoint(tmp_path, "mosaic-tiny", edit))


def test_weights_overflowing_the_requested_dtype_are_refused(tmp_path):
    def edit(t):
        t["pooler.dense.weight"][0, 0] = 1e5  # fine in bfloat16, inf in float16
    directory = make_checkpoint(tmp_path, "mosaic-tiny", edit)
    assert me.load_model(directory, dtype=torch.bfloat16) is not None
    with pytest.raises(CheckpointError, match="tensor pooler.dense.weight in .* overflows float16"):
        me.load_model(directory, dtype=torch.float16)


@pytest.mark.parametrize("device,message", [
    ("mps", "MPS backend is not available"),
    ("nonexistent", "is not a device name"),
    (3, "must be a device name"),
    ("meta", "holds no data"),
    ("xpu", "is not supported"),
] + ([("cuda", "no CUDA GPU is available")] if not torch.cuda.is_available() else []))
def test_unusable_devices_are_one_sentence(device, message):
    with pytest.raises(me.MosaicError, match=message):
        me.load_model(WEIGHTS / "mosaic-tiny", device=device)


def test_dtype_names_and_unsupported_dtypes():
    model = me.load_model(WEIGHTS / "mosaic-tiny", dtype="bfloat16")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in me.load_model(WEIGHTS / "mosaic-tiny", dtype="bf16").parameters()} \
        == {torch.bfloat16}  # the short names every command accepts
    for dtype in (torch.float8_e4m3fn, "float8", torch.int64, "float"):
        with pytest.raises(ConfigError, match="is not supported; use one of float32"):
            me.load_model(WEIGHTS / "mosaic-tiny", dtype=dtype)


def test_attention_window_is_a_load_time_choice():
    for window in (True, False):
        model = me.load_model(WEIGHTS / "mosaic-tiny", attention_window=window)
        assert model.config.attention_window is window
        assert all(layer.attention.self.attention_window is window
                   for layer in model.encoder.layer)
