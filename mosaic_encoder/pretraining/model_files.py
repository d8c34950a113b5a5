"""Masked-LM checkpoint directories, as ``init`` and ``pretrain`` write them.

A directory holds ``config.json`` (the upstream file's keys, with every architecture field of
:class:`~mosaic_encoder.config.MosaicConfig` stated explicitly), ``model.safetensors`` in the
published ``BertForMaskedLM`` layout (``bert.``-prefixed encoder, ``cls.predictions.*``; the
decoder weight is tied to the word embeddings and not stored twice), and the tokenizer files.
:func:`mosaic_encoder.load_model`, ``fill-mask``, ``verify`` and ``eval-mlm`` read it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from ..atomic import atomic_directory
from ..checkpoint import TIED_DECODER, WEIGHTS_NAME
from ..errors import CheckpointError, InputError
from ..models import MosaicBertForMaskedLM

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "vocab.txt")


def config_values(model: MosaicBertForMaskedLM, base: dict[str, Any] | None = None
                  ) -> dict[str, Any]:
    """``config.json`` contents: ``base``'s keys, the model's architecture fields stated."""
    values = dict(base or {})
    values.update(model.config.architecture_values(), architectures=["BertForMaskedLM"],
                  model_type="bert", torch_dtype="float32")
    return values


def write_masked_lm(directory: Path, model: MosaicBertForMaskedLM, tokenizer_dir: Path,
                    base_config: dict[str, Any] | None = None) -> None:
    """Write the model's files into the existing directory ``directory``.

    Args:
        directory: where to write (normally a temporary directory, renamed when complete).
        model: the masked-LM model; its weights are stored as float32.
        tokenizer_dir: the tokenizer files are copied from here (``tokenizer.json`` required).
        base_config: upstream ``config.json`` keys to keep (e.g. ``model_type``, ``auto_map``).
    """
    tensors = {name: tensor.detach().to("cpu", torch.float32).contiguous().clone()
               for name, tensor in model.state_dict().items() if name != TIED_DECODER}
    save_file(tensors, directory / WEIGHTS_NAME, metadata={"format": "pt"})
    (directory / "config.json").write_text(
        json.dumps(config_values(model, base_config), indent=2) + "\n", encoding="utf-8")
    copy_tokenizer(tokenizer_dir, directory)


def copy_tokenizer(source: Path, target: Path) -> None:
    """Copy the tokenizer files present in ``source``; ``tokenizer.json`` must be one."""
    if not (source / "tokenizer.json").is_file():
        raise CheckpointError(f"tokenizer directory {source} has no tokenizer.json.")
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, target / name)


def check_new_directory(output: Path) -> None:
    """Refuse an output that exists and is not an empty directory (nothing is touched)."""
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        what = "a file" if not output.is_dir() else "not empty"
        raise InputError(f"output directory {output} is {what}; choose a new or empty "
                         f"directory.")


def write_directory(output: Path, model: MosaicBertForMaskedLM, tokenizer_dir: Path,
                    base_config: dict[str, Any] | None = None) -> None:
    """Write a whole checkpoint directory at ``output`` (new or empty) completely or not at all."""
    check_new_directory(output)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"output directory {output} cannot be created ({err.strerror}).") \
            from None
    with atomic_directory(output) as temporary:
        write_masked_lm(temporary, model, tokenizer_dir, base_config)
