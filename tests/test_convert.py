"""pytorch_model.bin -> model.safetensors: nothing pickled ever runs, tied tensors stored once."""

import collections
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

import mosaic_encoder as me
from helpers import WEIGHTS, leftovers
from mosaic_encoder import CheckpointError, InputError
from mosaic_encoder.convert import convert_checkpoint, deduplicate, load_state_dict

DECODER, WORDS = "cls.predictions.decoder.weight", "bert.embeddings.word_embeddings.weight"


class CodePayload:
    """Unpickling this object would run code that creates ``marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').close()",)


def test_code_payload_is_refused_through_the_cli(tmp_path):
    marker = tmp_path / "marker"
    source = tmp_path / "pytorch_model.bin"
    torch.save({"embeddings.word_embeddings.weight": torch.ones(2, 2),
                "payload": CodePayload(marker)}, source)
    # The payload really is live: an ordinary unpickler would create the marker.
    assert not marker.exists()
    result = subprocess.run([sys.executable, "-m", "mosaic_encoder.cli", "convert", str(tmp_path)],
                            capture_output=True, cwd=tmp_path)
    stderr = result.stderr.decode()
    assert result.returncode == 1 and result.stdout == b""
    assert "refused" in stderr and "arbitrary code (global exec)" in stderr
    assert "nothing in it was run" in stderr and "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1
    assert not marker.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pytorch_model.bin"]


@pytest.mark.parametrize("variant", ["zip", "legacy", "pickle2", "pickle4"])
def test_every_pickle_format_with_code_is_refused(tmp_path, variant):
    marker = tmp_path / "marker"
    source = tmp_path / "model.bin"
    payload = {"w": torch.zeros(2), "payload": CodePayload(marker)}
    if variant == "zip":
        torch.save(payload, source)
    elif variant == "legacy":
        torch.save(payload, source, _use_new_zipfile_serialization=False)
    else:
        with source.open("wb") as stream:
            pickle.dump({"payload": CodePayload(marker)}, stream, protocol=int(variant[-1]))
    with pytest.raises(CheckpointError, match=r"^refused: .*nothing in it was run"):
        convert_checkpoint(source)
    assert not marker.exists()
    assert not (tmp_path / "model.safetensors").exists() and leftovers(tmp_path) == []


def save_tied_mlm(directory: Path, decoder_first: bool = False) -> dict[str, torch.Tensor]:
    tensors = load_file(WEIGHTS / "mosaic-tiny-mlm" / "model.safetensors")
    tensors[DECODER] = tensors[WORDS]  # tied: one storage, two names, as torch.save writes it
    if decoder_first:
        tensors = {DECODER: tensors.pop(DECODER), **tensors}
    directory.mkdir(exist_ok=True)
    torch.save(tensors, directory / "pytorch_model.bin")
    return tensors


@pytest.mark.parametrize("decoder_first", [False, True])
def test_tied_decoder_is_stored_once_and_loads_identically(tmp_path, decoder_first):
    tensors = save_tied_mlm(tmp_path / "ckpt", decoder_first)
    (tmp_path / "ckpt" / "config.json").write_bytes(
        (WEIGHTS / "mosaic-tiny-mlm" / "config.json").read_bytes())
    result = convert_checkpoint(tmp_path / "ckpt")
    assert result.output == tmp_path / "ckpt" / "model.safetensors"
    assert result.dropped == [(DECODER, WORDS)]
    assert result.tensors == len(tensors) - 1 and result.dtypes == {"bfloat16": len(tensors) - 1}
    with safe_open(str(result.output), framework="pt") as handle:
        assert handle.metadata() == {"format": "pt"}
        stored = {name: handle.get_tensor(name) for name in handle.keys()}
    assert set(stored) == set(tensors) - {DECODER}
    for name, tensor in stored.items():
        assert tensor.dtype == torch.bfloat16 and torch.equal(tensor, tensors[name]), name
    converted = me.load_model(tmp_path / "ckpt")
    original = me.load_model(WEIGHTS / "mosaic-tiny-mlm")
    ids = torch.tensor([[101, 7592, 103, 102]])
    with torch.inference_mode():
        assert torch.equal(converted(ids).logits, original(ids).logits)
    assert leftovers(tmp_path / "ckpt") == []


def test_generic_shared_storage_keeps_the_first_name(tmp_path):
    shared = torch.arange(6.0).reshape(2, 3)
    flat = torch.arange(10.0)
    state = {"b.weight": shared, "a.weight": shared, "first": flat[:4], "second": flat[4:],
             "own": torch.ones(3)}
    tensors, dropped = deduplicate(state)
    assert list(tensors) == ["b.weight", "first", "second", "own"]
    assert dropped == [("a.weight", "b.weight")]
    # Distinct views of one storage are stored as separate copies with the same values.
    assert tensors["first"].untyped_storage().data_ptr() != tensors["second"].untyped_storage().data_ptr()
    torch.save(state, tmp_path / "x.bin")
    result = convert_checkpoint(tmp_path / "x.bin", tmp_path / "x.safetensors")
    stored = load_file(result.output)
    assert torch.equal(stored["second"], flat[4:]) and set(stored) == set(tensors)


@pytest.mark.parametrize("container", ["ordered", "state_dict", "model", "parameter"])
def test_plain_containers_are_accepted(tmp_path, container):
    weights = {"w": torch.ones(2, 2), "b": torch.zeros(2)}
    loaded = {"ordered": collections.OrderedDict(weights),
              "state_dict": {"epoch": 3, "state_dict": weights},
              "model": {"model": weights, "step": 10},
              "parameter": {k: torch.nn.Parameter(v) for k, v in weights.items()}}[container]
    torch.save(loaded, tmp_path / "x.bin")
    state = load_state_dict(tmp_path / "x.bin")
    assert set(state) == {"w", "b"} and all(type(t) is torch.Tensor for t in state.values())


@pytest.mark.parametrize("content,message", [
    ({"epoch": 3, "w": torch.ones(1)}, "entry 'epoch' is of type int, not a tensor"),
    ([torch.ones(1)], "holds a list, not a state dict"),
    ({}, "empty dict"),
    ({"state_dict": {"w": torch.ones(1), "note": "x"}}, "entry 'state_dict' is of type dict"),
])
def test_non_state_dicts_are_refused(tmp_path, content, message):
    torch.save(content, tmp_path / "x.bin")
    with pytest.raises(CheckpointError, match=message):
        convert_checkpoint(tmp_path / "x.bin")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.bin"]


def test_unreadable_files(tmp_path):
    (tmp_path / "garbage.bin").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="weights-only unpickler rejects it"):
        convert_checkpoint(tmp_path / "garbage.bin")
    torch.save({"w": torch.ones(100)}, tmp_path / "full.bin")
    (tmp_path / "cut.bin").write_bytes((tmp_path / "full.bin").read_bytes()[:300])
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        convert_checkpoint(tmp_path / "cut.bin")
    with pytest.raises(CheckpointError, match="does not exist"):
        convert_checkpoint(tmp_path / "missing.bin")
    with pytest.raises(CheckpointError, match="has no pytorch_model.bin"):
        convert_checkpoint(tmp_path)
    (tmp_path / "pytorch_model.bin.index.json").write_text("{}")
    with pytest.raises(CheckpointError, match="sharded"):
        convert_checkpoint(tmp_path)
    assert leftovers(tmp_path) == [] and not (tmp_path / "model.safetensors").exists()


def test_output_rules(tmp_path):
    torch.save({"w": torch.ones(2)}, tmp_path / "x.bin")
    target = tmp_path / "out.safetensors"
    convert_checkpoint(tmp_path / "x.bin", target)
    with pytest.raises(InputError, match="already exists; pass --force"):
        convert_checkpoint(tmp_path / "x.bin", target)
    torch.save({"w": torch.full((2,), 7.0)}, tmp_path / "x.bin")
    convert_checkpoint(tmp_path / "x.bin", target, overwrite=True)
    assert torch.equal(load_file(target)["w"], torch.full((2,), 7.0))
    with pytest.raises(InputError, match="must end in .safetensors"):
        convert_checkpoint(tmp_path / "x.bin", tmp_path / "out.npy")
    with pytest.raises(InputError, match="cannot be written"):
        convert_checkpoint(tmp_path / "x.bin", tmp_path / "no" / "such" / "out.safetensors")
    (tmp_path / "dir.safetensors").mkdir()
    with pytest.raises(InputError, match="is a directory"):
        convert_checkpoint(tmp_path / "x.bin", tmp_path / "dir.safetensors")
    assert leftovers(tmp_path) == []
    assert not any(name.startswith(".") for name in os.listdir(tmp_path))


class SystemPayload:
    """Unpickling this object would call os.system (posix.system)."""

    def __reduce__(self):
        return os.system, ("true",)


def test_refusal_names_the_global_without_torchs_advice(tmp_path):
    torch.save({"w": torch.zeros(2), "payload": SystemPayload()}, tmp_path / "model.bin")
    with pytest.raises(CheckpointError) as error:
        convert_checkpoint(tmp_path / "model.bin")
    message = str(error.value)
    assert "global posix.system" in message and "weights_only" not in message
    assert "\n" not in message


@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors")
@pytest.mark.parametrize("make,message", [
    (lambda: torch.zeros(1).expand(1 << 20), "needs 4,194,304 bytes but its storage holds 4"),
    (lambda: torch.empty(3, device="meta"), "is a meta tensor"),
    (lambda: torch.nested.nested_tensor([torch.ones(2), torch.ones(3)]), "is a nested tensor"),
], ids=["zero-stride", "meta", "nested"])
def test_tensors_that_would_expand_or_hold_no_data_are_refused(tmp_path, make, message):
    torch.save({"w": make()}, tmp_path / "model.bin")
    assert (tmp_path / "model.bin").stat().st_size < 10_000
    with pytest.raises(CheckpointError, match=f"tensor w in .* {message}"):
        convert_checkpoint(tmp_path / "model.bin")
    assert not (tmp_path / "model.safetensors").exists() and leftovers(tmp_path) == []


def test_converted_file_has_the_umask_permissions(tmp_path):
    torch.save({"w": torch.ones(2)}, tmp_path / "model.bin")
    previous = os.umask(0o027)
    try:
        convert_checkpoint(tmp_path / "model.bin")
    finally:
        os.umask(previous)
    assert (tmp_path / "model.safetensors").stat().st_mode & 0o777 == 0o640
