"""Safe conversion of a ``pytorch_model.bin`` (a torch pickle) to ``model.safetensors``.

The pickle is read with torch's weights-only unpickler (``torch.load(..., weights_only=True)``),
which builds tensors and plain containers only: a file whose pickle names any other global (a
function to call, a class to build) is refused before anything in it runs. Tensors whose values
need more bytes than their storage holds (a zero-stride view: a 1.6 KB pickle that would expand
to gigabytes), meta tensors (no data) and nested tensors are refused too. Tensor names are kept;
tensors that share storage (tied weights) are stored once, and the file is written through
:func:`mosaic_encoder.atomic.atomic_path` and read back before it is renamed into place, so a
failure never leaves a partial ``model.safetensors``.
"""

from __future__ import annotations

import pickle
import re
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import save_file

from .api_arguments import flag_arg, optional_path_arg, path_arg
from .atomic import atomic_path
from .checkpoint import TIED_SOURCE, WEIGHTS_NAME, read_header, short
from .errors import CheckpointError, InputError

BIN_NAME = "pytorch_model.bin"
# Containers a training script may wrap a state dict in.
NESTED_KEYS = ("state_dict", "model")
# torch names the refused global "Unsupported global: GLOBAL x.y" or "unsupported GLOBAL x.y".
_GLOBAL = re.compile(r"unsupported global:? (?:GLOBAL )?([\w.]+)", re.IGNORECASE)


@dataclass(frozen=True)
class Conversion:
    """What :func:`convert_checkpoint` wrote."""

    source: Path
    output: Path
    tensors: int
    parameters: int
    dtypes: dict[str, int]
    # (dropped name, kept name) for every tensor stored once under another name.
    dropped: list[tuple[str, str]] = field(default_factory=list)


def resolve_source(source: str | Path) -> Path:
    """The ``.bin`` file a path names: the file itself, or ``pytorch_model.bin`` in a directory."""
    path = Path(source)
    if path.is_dir():
        if (path / BIN_NAME).is_file():
            return path / BIN_NAME
        if (path / f"{BIN_NAME}.index.json").is_file():
            raise CheckpointError(f"{path} holds a sharded {BIN_NAME}.index.json checkpoint, which "
                                  f"convert does not handle; convert each shard file instead.")
        raise CheckpointError(f"{path} has no {BIN_NAME} to convert.")
    if not path.exists():
        raise CheckpointError(f"file {path} does not exist.")
    if not path.is_file():
        raise CheckpointError(f"{path} is not a regular file.")
    return path


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a torch pickle without executing pickled code; return its tensors by name.

    Raises:
        CheckpointError: when the file needs arbitrary code to unpickle (refused, nothing run), is
            not a readable torch checkpoint, or does not hold a state dict of tensors.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():
            # torch warns about pickle protocols before refusing; the refusal says enough.
            warnings.simplefilter("ignore")
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(_refusal(path, str(err))) from None
    except FileNotFoundError:
        raise CheckpointError(f"file {path} does not exist.") from None
    except Exception as err:  # noqa: BLE001 - torch raises RuntimeError, EOFError, KeyError, ...
        # Nothing here ran pickled code: weights_only refuses before any global is called.
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint "
                              f"({type(err).__name__}: {reason[:200].rstrip('.')}).") from None
    return _state_dict(loaded, path)


def _refusal(path: Path, message: str) -> str:
    found = _GLOBAL.search(message)
    if found:
        return (f"refused: {path} needs arbitrary code (global {found[1]}) to unpickle; nothing "
                f"in it was run, and only plain tensor state dicts are converted.")
    # Otherwise torch names the reason after "WeightsUnpickler error:", on that line or the next;
    # its advice to load with weights_only=False (which would run the code) is never repeated.
    after = message.split("WeightsUnpickler error:", 1)[-1]
    detail = next((line.strip() for line in after.splitlines() if line.strip()
                   and "weights_only" not in line.lower() and "weights only" not in line.lower()),
                  "unpickling failed")
    return (f"refused: {path} is not a plain PyTorch tensor pickle: torch's weights-only "
            f"unpickler rejects it ({detail[:200].rstrip('.')}), so nothing in it was run.")


def _state_dict(loaded, path: Path) -> dict[str, torch.Tensor]:
    def tensors_only(value) -> bool:
        return isinstance(value, dict) and bool(value) and all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items())

    if tensors_only(loaded):
        state = loaded
    elif isinstance(loaded, dict) and any(tensors_only(loaded.get(k)) for k in NESTED_KEYS):
        state = next(loaded[k] for k in NESTED_KEYS if tensors_only(loaded.get(k)))
    elif isinstance(loaded, dict):
        if not loaded:
            raise CheckpointError(f"{path} holds an empty dict, so there are no tensors to convert.")
        key, value = next((k, v) for k, v in loaded.items()
                          if not (isinstance(k, str) and isinstance(v, torch.Tensor)))
        raise CheckpointError(f"{path} holds a dict whose entry {key!r} is of type "
                              f"{type(value).__name__}, not a tensor; only state dicts of tensors "
                              f"(possibly under 'state_dict' or 'model') are converted.")
    else:
        raise CheckpointError(f"{path} holds a {type(loaded).__name__}, not a state dict of "
                              f"tensors.")
    for name, tensor in state.items():
        _check_storage(short(name), tensor, path)
    return {name: tensor.detach() for name, tensor in state.items()}


def _check_storage(name: str, tensor: torch.Tensor, path: Path) -> None:
    """Refuse a tensor that safetensors cannot hold or that would expand when written."""
    if tensor.is_nested:
        raise CheckpointError(f"tensor {name} in {path} is a nested tensor, which safetensors "
                              f"cannot hold.")
    if tensor.is_meta:
        raise CheckpointError(f"tensor {name} in {path} is a meta tensor: it has a shape but no "
                              f"values to convert.")
    if tensor.layout != torch.strided or tensor.is_quantized:
        raise CheckpointError(f"tensor {name} in {path} is {tensor.layout} "
                              f"{'quantized ' if tensor.is_quantized else ''}storage, which "
                              f"safetensors cannot hold.")
    needed = tensor.numel() * tensor.element_size()
    stored = tensor.untyped_storage().nbytes()
    if needed > stored:
        # Only overlapping views (zero or small strides) need more bytes than their storage.
        raise CheckpointError(f"tensor {name} in {path} needs {needed:,} bytes but its storage "
                              f"holds {stored:,} (a zero-stride or overlapping view); written out "
                              f"it would expand, so it is refused.")


def deduplicate(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor],
                                                            list[tuple[str, str]]]:
    """Store tied tensors once and give every remaining tensor its own contiguous memory.

    Tensors that are the same view of the same storage are one tensor under several names: the
    masked-LM layout keeps ``bert.embeddings.word_embeddings.weight`` (loading ties the decoder
    to it again); otherwise the first name in order is kept. Returns the tensors to store, in
    their original order, and the (dropped, kept) name pairs.
    """
    groups: dict[tuple, list[str]] = {}
    for name, tensor in state.items():
        key = ("empty", name) if tensor.numel() == 0 else (
            tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape),
            tuple(tensor.stride()), tensor.dtype)
        groups.setdefault(key, []).append(name)
    keep, dropped = set(), []
    for names in groups.values():
        kept = TIED_SOURCE if TIED_SOURCE in names else names[0]
        keep.add(kept)
        dropped += [(name, kept) for name in names if name != kept]
    kept_tensors = {name: tensor for name, tensor in state.items() if name in keep}
    # Different views of one storage (slices of a flat buffer) are stored as separate copies.
    shared = Counter(t.untyped_storage().data_ptr() for t in kept_tensors.values() if t.numel())
    out = {}
    for name, tensor in kept_tensors.items():
        if tensor.numel() and shared[tensor.untyped_storage().data_ptr()] > 1:
            tensor = tensor.clone(memory_format=torch.contiguous_format)
        out[name] = tensor.contiguous()
    return out, dropped


def convert_checkpoint(source: str | Path, output: str | Path | None = None,
                       overwrite: bool = False) -> Conversion:
    """Convert a ``pytorch_model.bin`` (or a directory holding one) to safetensors.

    Args:
        source: the ``.bin`` file, or a checkpoint directory with ``pytorch_model.bin``.
        output: where to write; default ``model.safetensors`` next to the source file.
        overwrite: replace an existing output file (otherwise that is an error).
    Returns:
        A :class:`Conversion` describing the file written.
    Raises:
        CheckpointError: the source is missing, refused (it needs arbitrary code) or unreadable.
        InputError: the output exists (without ``overwrite``) or cannot be written.
    """
    path = resolve_source(path_arg(source, "source"))
    target = optional_path_arg(output, "output") or path.parent / WEIGHTS_NAME
    _check_target(target, flag_arg(overwrite, "overwrite"))
    state = load_state_dict(path)
    tensors, dropped = deduplicate(state)
    _save_atomically(tensors, target)
    dtypes = Counter(str(t.dtype).removeprefix("torch.") for t in tensors.values())
    return Conversion(path, target, len(tensors), sum(t.numel() for t in tensors.values()),
                      dict(dtypes), dropped)


def _check_target(target: Path, overwrite: bool) -> None:
    if target.is_dir():
        raise InputError(f"output path {target} is a directory; name the .safetensors file.")
    if target.suffix != ".safetensors":
        raise InputError(f"output file {target} must end in .safetensors.")
    if target.exists() and not overwrite:
        raise InputError(f"output file {target} already exists; pass --force to replace it.")
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"output path {target} cannot be written (directory {parent} does not "
                         f"exist).")


def _save_atomically(tensors: dict[str, torch.Tensor], target: Path) -> None:
    """Write beside ``target``, read the file back, then rename it into place."""
    with atomic_path(target) as temporary:
        try:
            save_file(tensors, temporary, metadata={"format": "pt"})
        except SafetensorError as err:
            raise CheckpointError(f"safetensors could not write {target} ({err}).") from None
        if set(read_header(temporary)) != set(tensors):
            raise CheckpointError(f"the file written to {target} does not list the tensors it "
                                  f"was given.")
