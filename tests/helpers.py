"""Helpers shared by several test modules (imported by name, not through conftest)."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file, save_file

from mosaic_encoder.bundled import WEIGHTS_DIR


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


def leftovers(directory: Path) -> list[str]:
    """Temporary files an interrupted atomic write would leave (hidden ``.NAME.*.tmp``)."""
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def write_with_duplicate_key(path, first_dtype="F32", second_dtype="I32"):
    """A safetensors file whose header names tensor 'w' twice, with different dtypes."""
    header = ('{"w": {"dtype": "%s", "shape": [2], "data_offsets": [0, 8]}, '
              '"w": {"dtype": "%s", "shape": [2], "data_offsets": [0, 8]}}'
              % (first_dtype, second_dtype)).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\x00" * 8)
