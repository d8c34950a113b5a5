"""Training checkpoints in the published sentence-transformers layout, written all or nothing.

An output directory of ``mosaic-encoder train`` looks like::

    OUTPUT/
      config.json model.safetensors modules.json sentence_bert_config.json 1_Pooling/ tokenizer...
      checkpoints/step-00000200/          the same files plus training_state/
      log.jsonl                           one JSON object per logged step or evaluation

Each ``checkpoints/step-N`` directory is a complete sentence-transformers checkpoint (loadable by
:class:`~mosaic_encoder.sentence.SentenceEncoder`, :func:`~mosaic_encoder.load_model` and
``mosaic-encoder verify``) plus ``training_state/`` (optimizer, scheduler, RNG states, step). It is
written under a temporary name and renamed into place in one step, so an interrupted save leaves
the previous checkpoint as it was and no partial one. The files at the top of ``OUTPUT`` are the
latest finished model, copied from its checkpoint file by file through :func:`atomic_path`; a run
interrupted while copying is completed by resuming it.

Weights are stored in float32 under the tensor names of the published encoders: ``BertModel`` keys
at the root, and for a classic checkpoint (e.g. all-MiniLM-L6-v2) with separate
``query``/``key``/``value`` projections as its source had.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from ..atomic import sigterm_as_exit, atomic_path
from ..checkpoint import CheckpointDir, Pipeline, split_qkv
from ..errors import CheckpointError, InputError
from ..models import MosaicBertModel

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "vocab.txt")
MODEL_FILES = ("config.json", "model.safetensors", "modules.json", "sentence_bert_config.json",
               "1_Pooling", "2_Normalize") + TOKENIZER_FILES
CHECKPOINTS = "checkpoints"
STATE_DIR = "training_state"
LOG_FILE = "log.jsonl"
_STEP_DIR = re.compile(r"step-(\d{8})")
_TEMPORARY = re.compile(r"\.step-\d{8}\..*\.tmp")


@dataclass(frozen=True)
class Source:
    """What a saved checkpoint copies from the checkpoint training started from."""

    directory: Path
    pipeline: Pipeline
    config_values: dict[str, Any]
    fused_qkv: bool

    @classmethod
    def read(cls, directory: str | Path) -> Source:
        checkpoint = CheckpointDir.open(directory)
        return cls(checkpoint.path, checkpoint.pipeline, checkpoint.config_values,
                   checkpoint.layout.fused_qkv)


def stored_tensors(encoder: MosaicBertModel, fused_qkv: bool) -> dict[str, torch.Tensor]:
    """The encoder's tensors as float32 CPU copies under the published names.

    With ``fused_qkv`` False the packed ``Wqkv`` projection is split back into ``query``, ``key``
    and ``value`` (see :func:`mosaic_encoder.checkpoint.split_qkv`).
    """
    tensors = {name: tensor.detach().to("cpu", torch.float32)
               for name, tensor in encoder.state_dict().items()}
    if not fused_qkv:
        tensors = split_qkv(tensors)
    return {name: tensor.clone(memory_format=torch.contiguous_format)
            for name, tensor in tensors.items()}


def _write_model(directory: Path, encoder: MosaicBertModel, source: Source) -> None:
    values = dict(source.config_values, architectures=["BertModel"], torch_dtype="float32")
    (directory / "config.json").write_text(json.dumps(values, indent=2) + "\n", encoding="utf-8")
    save_file(stored_tensors(encoder, source.fused_qkv), directory / "model.safetensors",
              metadata={"format": "pt"})
    pipeline = source.pipeline
    modules = [{"idx": 0, "name": "0", "path": "",
                "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling",
                "type": "sentence_transformers.models.Pooling"}]
    if pipeline.normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize",
                        "type": "sentence_transformers.models.Normalize"})
        (directory / "2_Normalize").mkdir()
    (directory / "modules.json").write_text(json.dumps(modules, indent=2) + "\n", encoding="utf-8")
    (directory / "1_Pooling").mkdir()
    pooling = {"word_embedding_dimension": encoder.config.hidden_size}
    pooling.update({f"pooling_mode_{mode}": mode in pipeline.pooling.modes
                    for mode in ("cls_token", "mean_tokens", "max_tokens", "mean_sqrt_len_tokens")})
    (directory / "1_Pooling" / "config.json").write_text(json.dumps(pooling, indent=2) + "\n",
                                                         encoding="utf-8")
    st_config = {"max_seq_length": pipeline.max_seq_length, "do_lower_case": pipeline.do_lower_case}
    (directory / "sentence_bert_config.json").write_text(json.dumps(st_config, indent=2) + "\n",
                                                          encoding="utf-8")
    for name in TOKENIZER_FILES:
        if (pipeline.transformer_dir / name).is_file():
            shutil.copyfile(pipeline.transformer_dir / name, directory / name)


def save_checkpoint(output: Path, step: int, encoder: MosaicBertModel, source: Source,
                    state: dict[str, Any], keep: int = 1) -> Path:
    """Write ``output/checkpoints/step-N`` completely or not at all; keep the newest ``keep``.

    Args:
        output: the run's output directory.
        step: optimizer steps taken.
        encoder: the model being trained (its current weights are saved).
        source: the starting checkpoint (pooling, tokenizer, config, tensor naming).
        state: ``training_state/state.pt`` contents (tensors, numbers, strings, dicts, lists).
        keep: how many checkpoints to leave in place (older ones are removed after the rename).
    Returns:
        the checkpoint directory.
    """
    parent = output / CHECKPOINTS
    parent.mkdir(parents=True, exist_ok=True)
    target = parent / f"step-{step:08d}"
    with sigterm_as_exit():
        temporary = Path(tempfile.mkdtemp(dir=parent, prefix=f".{target.name}.", suffix=".tmp"))
        try:
            _write_model(temporary, encoder, source)
            (temporary / STATE_DIR).mkdir()
            torch.save(state, temporary / STATE_DIR / "state.pt")
            (temporary / STATE_DIR / "progress.json").write_text(
                json.dumps({"step": step}) + "\n", encoding="utf-8")
            os.chmod(temporary, 0o777 & ~_umask())
            if target.exists():
                shutil.rmtree(target)
            os.rename(temporary, target)
        except BaseException:
            shutil.rmtree(temporary, ignore_errors=True)
            raise
    for old in checkpoint_dirs(output)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return target


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def publish(checkpoint: Path, output: Path) -> None:
    """Copy a checkpoint's model files to the top of ``output``, each file atomically."""
    for name in MODEL_FILES:
        source = checkpoint / name
        if source.is_dir():
            (output / name).mkdir(exist_ok=True)
            for inner in source.iterdir():
                with atomic_path(output / name / inner.name) as temporary:
                    shutil.copyfile(inner, temporary)
        elif source.is_file() and name != "model.safetensors":
            with atomic_path(output / name) as temporary:
                shutil.copyfile(source, temporary)
    # The weights go last: until they are in place no stale config describes them.
    with atomic_path(output / "model.safetensors") as temporary:
        shutil.copyfile(checkpoint / "model.safetensors", temporary)


def checkpoint_dirs(output: Path) -> list[Path]:
    """The complete checkpoints of a run, oldest first."""
    parent = output / CHECKPOINTS
    if not parent.is_dir():
        return []
    return sorted(p for p in parent.iterdir()
                  if p.is_dir() and _STEP_DIR.fullmatch(p.name)
                  and (p / STATE_DIR / "progress.json").is_file())


def check_output(output: Path, resume: bool) -> Path | None:
    """Check that ``output`` may receive this run; return the checkpoint to resume from, if any.

    Raises:
        InputError: ``output`` is a file, holds something that is not part of a training run, or
            holds a run while ``resume`` is False (nothing is touched in either case).
    """
    if output.exists() and not output.is_dir():
        raise InputError(f"output directory {output} is a file.")
    if not output.exists():
        return None
    entries = sorted(p.name for p in output.iterdir())
    foreign = [name for name in entries if name not in MODEL_FILES + (CHECKPOINTS, LOG_FILE)]
    parent = output / CHECKPOINTS
    if parent.is_dir():
        foreign += [f"{CHECKPOINTS}/{p.name}" for p in parent.iterdir()
                    if not (_STEP_DIR.fullmatch(p.name) or _TEMPORARY.fullmatch(p.name))]
    if foreign:
        raise InputError(f"output directory {output} holds {', '.join(foreign[:5])}, which is not "
                         f"part of a training checkpoint; choose an empty or new directory.")
    if not entries:
        return None
    found = checkpoint_dirs(output)
    if not resume:
        raise InputError(f"output directory {output} already holds a training run; pass --resume "
                         f"to continue it or choose another directory.")
    if not found:
        raise InputError(f"output directory {output} holds no complete checkpoint to resume "
                         f"from; choose an empty or new directory.")
    return found[-1]


def load_state(checkpoint: Path) -> dict[str, Any]:
    """The ``training_state/state.pt`` of a checkpoint (loaded without running pickled code)."""
    path = checkpoint / STATE_DIR / "state.pt"
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several unrelated types for a damaged file
        raise CheckpointError(f"training state {path} cannot be read ({err}).") from None


def remove_temporaries(output: Path) -> None:
    """Remove what a killed process (SIGKILL, power loss) left of an unfinished save."""
    parent = output / CHECKPOINTS
    if parent.is_dir():
        for path in parent.iterdir():
            if _TEMPORARY.fullmatch(path.name):
                shutil.rmtree(path, ignore_errors=True)
