"""The directory of a training run: checkpoints written all or nothing, the published model, the log.

An output directory of ``mosaic-encoder train`` (or of any run of :mod:`.loop`) looks like::

    OUTPUT/
      config.json model.safetensors modules.json sentence_bert_config.json 1_Pooling/ tokenizer...
      checkpoints/step-00000200/          the same files plus training_state/
      log.jsonl                           one JSON object per logged step or evaluation
      best/                               with --keep-best: the best evaluation's model
      tensorboard/                        TensorBoard events, when tensorboard is installed

Each ``checkpoints/step-N`` directory holds the model files a task writes (for contrastive training
a complete sentence-transformers checkpoint, loadable by
:class:`~mosaic_encoder.sentence.SentenceEncoder`, :func:`~mosaic_encoder.load_model` and
``mosaic-encoder verify``) plus ``training_state/`` (optimizer, scheduler, RNG states, step). It is
written under a temporary name and renamed into place in one step, so an interrupted save leaves
the previous checkpoint as it was and no partial one. The files at the top of ``OUTPUT`` are the
latest finished model, copied from its checkpoint file by file through :func:`atomic_path`; a run
interrupted while copying is completed by resuming it.

:func:`write_sentence_model` writes the sentence-transformers files: weights in float32 under the
tensor names of the published encoders, ``BertModel`` keys at the root, and for a classic
checkpoint (e.g. all-MiniLM-L6-v2) with separate ``query``/``key``/``value`` projections as its
source had.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import re
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import save_file

from ..atomic import sigterm_as_exit, atomic_path
from ..checkpoint import ST_SETTINGS_FILE, TOKENIZER_FILES, CheckpointDir, Pipeline, split_qkv
from ..errors import CheckpointError, InputError
from ..models import MosaicBertModel

MODEL_FILES = ("config.json", "model.safetensors", "modules.json", "sentence_bert_config.json",
               ST_SETTINGS_FILE, "1_Pooling", "2_Normalize") + TOKENIZER_FILES
CHECKPOINTS = "checkpoints"
STATE_DIR = "training_state"
LOG_FILE = "log.jsonl"
BEST_DIR = "best"
TENSORBOARD_DIR = "tensorboard"
PLOT_FILE = "plot.png"
# What a run writes beside its checkpoints; alone, it is what a failed run left.
RUN_FILES = (CHECKPOINTS, LOG_FILE, BEST_DIR, TENSORBOARD_DIR, PLOT_FILE)
_STEP_DIR = re.compile(r"step-(\d{8})")
_TEMPORARY = re.compile(r"\.step-\d{8}\..*\.tmp")
_BEST_TEMPORARY = re.compile(r"\.best\..*\.tmp")


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


def write_sentence_model(directory: Path, encoder: MosaicBertModel, source: Source,
                         st_settings: dict[str, Any] | None = None) -> None:
    """Write ``encoder`` into the empty ``directory`` in ``source``'s sentence-transformers layout.

    ``st_settings``, when given, is written as ``config_sentence_transformers.json`` (prompts,
    similarity function), the file where sentence-transformers keeps them.
    """
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
    if st_settings:
        (directory / ST_SETTINGS_FILE).write_text(json.dumps(st_settings, indent=2) + "\n",
                                           encoding="utf-8")
    for name in TOKENIZER_FILES:
        if (pipeline.transformer_dir / name).is_file():
            shutil.copyfile(pipeline.transformer_dir / name, directory / name)


def save_checkpoint(output: Path, step: int, write_model: Callable[[Path], None],
                    state: dict[str, Any], keep: int = 1) -> Path:
    """Write ``output/checkpoints/step-N`` completely or not at all; keep the newest ``keep``.

    Args:
        output: the run's output directory.
        step: optimizer steps taken.
        write_model: writes the model files into the (empty) directory it is given.
        state: ``training_state/state.pt`` contents (tensors, numbers, strings, dicts, lists).
        keep: how many checkpoints to leave in place (older ones are removed after the rename).
    Returns:
        the checkpoint directory.
    Raises:
        CheckpointError: the disk is full or the directory not writable (nothing is left behind).
    """
    parent = output / CHECKPOINTS
    target = parent / f"step-{step:08d}"
    with sigterm_as_exit(), _writing(target):
        parent.mkdir(parents=True, exist_ok=True)
        temporary = Path(tempfile.mkdtemp(dir=parent, prefix=f".{target.name}.", suffix=".tmp"))
        try:
            write_model(temporary)
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


def save_best(output: Path, write_model: Callable[[Path], None], record: dict[str, Any]) -> Path:
    """Replace ``output/best`` by the model ``write_model`` writes, with ``best.json`` holding
    ``record`` (the evaluation that made it the best); all or nothing, as checkpoints."""
    target = output / BEST_DIR
    with sigterm_as_exit(), _writing(target):
        temporary = Path(tempfile.mkdtemp(dir=output, prefix=".best.", suffix=".tmp"))
        try:
            write_model(temporary)
            (temporary / "best.json").write_text(json.dumps(record) + "\n", encoding="utf-8")
            os.chmod(temporary, 0o777 & ~_umask())
            if target.exists():
                os.rename(target, Path(tempfile.mkdtemp(dir=output, prefix=".best.",
                                                        suffix=".tmp")) / "old")
            os.rename(temporary, target)
        except BaseException:
            shutil.rmtree(temporary, ignore_errors=True)
            raise
        finally:
            remove_temporaries(output)
    return target


@contextlib.contextmanager
def _writing(path: Path):
    """Turn a failed write (full disk, file size limit, permissions) into one sentence."""
    try:
        yield
    except (OSError, SafetensorError, RuntimeError) as err:
        if isinstance(err, RuntimeError) and not _is_write_failure(err):
            raise
        reason = err.strerror if isinstance(err, OSError) and err.strerror else _first_line(err)
        raise CheckpointError(f"cannot write {path} ({reason}).") from None


def _is_write_failure(err: RuntimeError) -> bool:
    # torch.save reports a failed write as a RuntimeError from its zip writer.
    text = str(err)
    return "PytorchStreamWriter" in text or "file write failed" in text


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0][:200] if lines else type(err).__name__


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def publish(checkpoint: Path, output: Path) -> None:
    """Copy a checkpoint's model files to the top of ``output``, each file atomically.

    Raises:
        CheckpointError: a copy failed (the checkpoint itself is intact; resuming publishes it).
    """
    names = sorted(p.name for p in checkpoint.iterdir() if p.name != STATE_DIR)
    # The weights go last: until they are in place no stale config describes them.
    names.sort(key=lambda name: name == "model.safetensors")
    with _writing(output):
        for name in names:
            source = checkpoint / name
            if source.is_dir():
                (output / name).mkdir(exist_ok=True)
                for inner in source.iterdir():
                    with atomic_path(output / name / inner.name) as temporary:
                        shutil.copyfile(inner, temporary)
            else:
                with atomic_path(output / name) as temporary:
                    shutil.copyfile(source, temporary)


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

    What a failed run leaves without a complete checkpoint (``log.jsonl``, an empty
    ``checkpoints/``, a killed save's temporary) does not block a new run: the new run replaces it.

    Raises:
        InputError: ``output`` is a file, holds something that is not part of a training run, or
            holds a run while ``resume`` is False (nothing is touched in either case).
    """
    if output.exists() and not output.is_dir():
        raise InputError(f"output directory {output} is a file.")
    if not output.exists():
        return None
    entries = sorted(p.name for p in output.iterdir() if not _BEST_TEMPORARY.fullmatch(p.name))
    found = checkpoint_dirs(output)
    known = set(MODEL_FILES + RUN_FILES)
    if found:
        known |= {p.name for p in found[-1].iterdir() if p.name != STATE_DIR}
    foreign = [name for name in entries if name not in known]
    parent = output / CHECKPOINTS
    if parent.is_dir():
        foreign += [f"{CHECKPOINTS}/{p.name}" for p in parent.iterdir()
                    if not (_STEP_DIR.fullmatch(p.name) or _TEMPORARY.fullmatch(p.name))]
    if foreign:
        raise InputError(f"output directory {output} holds {', '.join(foreign[:5])}, which is not "
                         f"part of a training checkpoint; choose an empty or new directory.")
    if not found and set(entries) <= set(RUN_FILES):
        return None  # empty, or the leftovers of a run that failed before its first checkpoint
    if not resume:
        raise InputError(f"output directory {output} already holds a training run; pass --resume "
                         f"to continue it or choose another directory.")
    if not found:
        raise InputError(f"output directory {output} holds no complete checkpoint to resume "
                         f"from; choose an empty or new directory.")
    return found[-1]


def read_log(path: Path) -> list[dict[str, Any]]:
    """The records of a ``log.jsonl``, each an object with an integer ``step``.

    Raises:
        CheckpointError: one sentence naming the file and line for anything else.
    """
    try:
        lines = path.read_bytes().decode("utf-8").splitlines()
    except OSError as err:
        raise CheckpointError(f"training log {path} cannot be read ({err.strerror}).") from None
    except UnicodeDecodeError as err:
        raise CheckpointError(f"training log {path} is not UTF-8 text (byte {err.start}).") \
            from None
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            record = None
        step = record.get("step") if isinstance(record, dict) else None
        if not isinstance(step, int) or isinstance(step, bool):
            raise CheckpointError(f"training log {path} line {number} is not a record with an "
                                  f"integer step; remove the line or the log to resume.")
        records.append(record)
    return records


def load_state(checkpoint: Path) -> dict[str, Any]:
    """The ``training_state/state.pt`` of a checkpoint, loaded without running pickled code.

    Raises:
        CheckpointError: the file is missing, damaged, or holds anything but tensors and plain
            values (one sentence, whatever torch's own message).
    """
    path = checkpoint / STATE_DIR / "state.pt"
    try:
        with warnings.catch_warnings():  # torch's advice on pickle protocols is not for users
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(f"training state {path} holds objects other than tensors and plain "
                              f"values; it is not loaded, since unpickling them could run "
                              f"code.") from None
    except Exception as err:  # torch raises several unrelated types for a damaged file
        raise CheckpointError(f"training state {path} cannot be read "
                              f"({_first_line(err)}).") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"training state {path} holds a {type(state).__name__}, not the "
                              f"dictionary a checkpoint saves.")
    return state


def prepare(output: Path, fresh: bool) -> None:
    """Create ``output`` for a run, without a failed run's leftovers when ``fresh`` and without
    a killed save's temporaries always.

    Raises:
        CheckpointError: the directory cannot be created or written (a read-only file system).
    """
    with _writing(output):
        output.mkdir(parents=True, exist_ok=True)
        if fresh:
            clear(output)
        remove_temporaries(output)


def clear(output: Path) -> None:
    """Remove a failed run's leftovers (log, best model, events, empty checkpoint folder) before
    a new run."""
    for name in (LOG_FILE, PLOT_FILE):
        (output / name).unlink(missing_ok=True)
    remove_temporaries(output)
    for name in (BEST_DIR, TENSORBOARD_DIR):
        shutil.rmtree(output / name, ignore_errors=True)
    with contextlib.suppress(OSError):
        (output / CHECKPOINTS).rmdir()


def remove_temporaries(output: Path) -> None:
    """Remove what a killed process (SIGKILL, power loss) left of an unfinished save."""
    for path in output.iterdir() if output.is_dir() else ():
        if _BEST_TEMPORARY.fullmatch(path.name):
            shutil.rmtree(path, ignore_errors=True)
    parent = output / CHECKPOINTS
    if parent.is_dir():
        for path in parent.iterdir():
            if _TEMPORARY.fullmatch(path.name):
                shutil.rmtree(path, ignore_errors=True)
