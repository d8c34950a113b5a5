"""Loading checkpoints in the published layouts, strictly.

Three layouts are recognised from the tensor names alone:

* sentence-transformers / lodestone: ``BertModel`` keys at the root, with ``pooler.dense.*``;
* masked LM: ``bert.``-prefixed encoder plus ``cls.predictions.*``; the decoder weight is tied to
  the word embeddings and may be absent from the file;
* bare encoder: ``BertModel`` keys with or without the ``bert.`` prefix, with or without pooler.

Classic BERT checkpoints (e.g. all-MiniLM-L6-v2) store ``attention.self.query/key/value``
separately; they are concatenated at load time into the packed ``Wqkv`` projection
([Q | K | V] along the output features), so the same attention code and kernels run.

The model is built on the meta device and the file's tensors are assigned to it, so loading
allocates each weight once, in the requested dtype, and never builds an attention bias.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from .config import MosaicConfig
from .errors import CheckpointError
from .models import MosaicBertForMaskedLM, MosaicBertModel

WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
TIED_DECODER = "cls.predictions.decoder.weight"
TIED_SOURCE = "bert.embeddings.word_embeddings.weight"
# Buffers some writers store that carry no information (positions 0..N-1).
IGNORED = ("embeddings.position_ids",)
QKV = ("query", "key", "value")

_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


@dataclass(frozen=True)
class TensorInfo:
    """Where one stored tensor lives and what it is."""

    file: Path
    shape: tuple[int, ...]
    dtype: str


@dataclass(frozen=True)
class Layout:
    """Which model class and key prefix a checkpoint uses."""

    masked_lm: bool
    prefix: str
    pooler: bool
    fused_qkv: bool = True

    def build(self, config: MosaicConfig) -> nn.Module:
        if self.masked_lm:
            return MosaicBertForMaskedLM(config)
        return MosaicBertModel(config, add_pooler=self.pooler)


def _read_header(file: Path) -> dict[str, TensorInfo]:
    try:
        with safe_open(str(file), framework="pt") as handle:
            names = list(handle.keys())
            infos = {}
            for name in names:
                sliced = handle.get_slice(name)
                infos[name] = TensorInfo(file, tuple(sliced.get_shape()), sliced.get_dtype())
    except FileNotFoundError:
        raise CheckpointError(f"weights file {file} does not exist.") from None
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"weights file {file} is truncated or not a safetensors file "
                              f"({err}).") from None
    return infos


def read_tensor_index(directory: str | Path) -> dict[str, TensorInfo]:
    """Names, shapes and dtypes of every tensor in a checkpoint directory (single or sharded)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint directory {directory} does not exist.")
    single, index = directory / WEIGHTS_NAME, directory / INDEX_NAME
    if single.is_file():
        return _read_header(single)
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as err:
            raise CheckpointError(f"shard index {index} is unreadable or has no weight_map "
                                  f"({err}).") from None
        infos: dict[str, TensorInfo] = {}
        for shard in sorted(set(weight_map.values())):
            infos.update(_read_header(directory / shard))
        listed = {n for n, shard in weight_map.items() if infos.get(n) and infos[n].file.name == shard}
        if listed != set(weight_map):
            missing = sorted(set(weight_map) - listed)
            raise CheckpointError(f"shard index {index} lists tensors its shards do not hold: "
                                  f"{', '.join(missing[:10])}.")
        return infos
    if (directory / "pytorch_model.bin").is_file():
        raise CheckpointError(f"{directory} holds only pytorch_model.bin; convert it first with "
                              f"`mosaic-encoder convert {directory}`.")
    raise CheckpointError(f"{directory} has no {WEIGHTS_NAME} or {INDEX_NAME}.")


def detect_layout(names: set[str], source: str) -> Layout:
    """Recognise the layout from tensor names; a checkpoint of another architecture is an error."""
    if any(n.startswith("cls.predictions.") for n in names):
        layout = Layout(masked_lm=True, prefix="bert.", pooler=False)
    else:
        prefix = "bert." if names and all(n.startswith("bert.") for n in names) else ""
        layout = Layout(masked_lm=False, prefix=prefix, pooler=f"{prefix}pooler.dense.weight" in names)
    if f"{layout.prefix}embeddings.word_embeddings.weight" not in names:
        raise CheckpointError(f"{source} is not a BERT-family checkpoint (no "
                              f"{layout.prefix}embeddings.word_embeddings.weight).")
    fused = any(n.endswith("attention.self.Wqkv.weight") for n in names)
    if not fused and not any(n.endswith("attention.self.query.weight") for n in names):
        raise CheckpointError(f"{source} has neither attention.self.Wqkv nor "
                              f"attention.self.query weights: not a BERT-family encoder.")
    return Layout(layout.masked_lm, layout.prefix, layout.pooler, fused_qkv=fused)


def check_family(config: MosaicConfig, names: set[str], layout: Layout, source: str) -> None:
    """One sentence when config.json and the weights describe different model families."""
    has_positions = f"{layout.prefix}embeddings.position_embeddings.weight" in names
    has_glu = any(n.endswith("mlp.gated_layers.weight") for n in names)
    if config.uses_alibi and has_positions:
        raise CheckpointError(f"{source}: config.json describes an ALiBi (MosaicBERT) model but "
                              f"the weights have learned position embeddings (classic BERT).")
    if not config.uses_alibi and not has_positions:
        raise CheckpointError(f"{source}: config.json describes a classic BERT model (no "
                              f"alibi_starting_size) but the weights have no position embeddings.")
    if (config.feed_forward == "glu") != has_glu:
        kind = "gated (GLU)" if has_glu else "classic GELU"
        raise CheckpointError(f"{source}: the weights have a {kind} feed-forward, which "
                              f"config.json does not describe.")


def expected_tensors(model: nn.Module, layout: Layout) -> dict[str, tuple[int, ...]]:
    """Names (as stored in files) and shapes of every tensor the model needs."""
    prefix = "" if layout.masked_lm else layout.prefix
    expected = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        shape = tuple(tensor.shape)
        if not layout.fused_qkv and ".Wqkv." in name:
            for part in QKV:
                expected[prefix + name.replace("Wqkv", part)] = (shape[0] // 3, *shape[1:])
        else:
            expected[prefix + name] = shape
    return expected


def _mismatch_report(expected: dict[str, tuple[int, ...]], found: dict[str, TensorInfo],
                     optional: set[str]) -> list[str]:
    problems = []
    for name in sorted(set(expected) - set(found) - optional):
        problems.append(f"missing {name} (expected shape {list(expected[name])})")
    for name in sorted(set(found) - set(expected)):
        problems.append(f"unexpected {name} (found shape {list(found[name].shape)})")
    for name in sorted(set(expected) & set(found)):
        if expected[name] != found[name].shape:
            problems.append(f"wrong shape for {name} (expected {list(expected[name])}, found "
                            f"{list(found[name].shape)})")
    return problems


def load_model(path: str | Path, dtype: torch.dtype = torch.float32,
               device: torch.device | str = "cpu", attention: str = "auto") -> nn.Module:
    """Load a checkpoint directory into a model in eval mode.

    Args:
        path: directory with ``config.json`` and ``model.safetensors`` (or a sharded index).
        dtype: floating dtype of the returned parameters; stored tensors are cast to it.
        device: where the parameters live.
        attention: ``"auto"``, ``"sdpa"`` or ``"triton"`` (see :mod:`mosaic_encoder.attention`).
    Returns:
        :class:`MosaicBertModel` or :class:`MosaicBertForMaskedLM`, whose ``forward(input_ids,
        attention_mask=None, token_type_ids=None)`` returns an :class:`EncoderOutput`.
    Raises:
        CheckpointError, ConfigError: with one sentence naming the file or tensors at fault.
    """
    directory = Path(path)
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint directory {directory} does not exist.")
    if not dtype.is_floating_point:
        raise CheckpointError(f"dtype must be a floating-point dtype, got {dtype}.")
    config = MosaicConfig.from_json_file(directory / "config.json").replace(attention_impl=attention)
    found = read_tensor_index(directory)
    layout = detect_layout(set(found), str(directory))
    check_family(config, set(found), layout, str(directory))
    found = {n: i for n, i in found.items() if n.removeprefix(layout.prefix) not in IGNORED}
    with torch.device("meta"):
        model = layout.build(config)
    expected = expected_tensors(model, layout)
    optional = {TIED_DECODER} if layout.masked_lm else set()
    problems = _mismatch_report(expected, found, optional)
    if problems:
        raise CheckpointError(f"checkpoint {directory} does not match the model its config.json "
                              f"describes: {'; '.join(problems)}.")
    state = _read_tensors(found, layout, dtype, torch.device(device))
    if layout.masked_lm:
        source = state[TIED_SOURCE]
        stored = state.get(TIED_DECODER)
        if stored is not None and not torch.equal(stored, source):
            raise CheckpointError(f"checkpoint {directory} stores {TIED_DECODER} different from "
                                  f"{TIED_SOURCE}, but the two are tied in this architecture.")
        state[TIED_DECODER] = source
    model.load_state_dict(state, strict=True, assign=True)
    if layout.masked_lm:
        model.tie_weights()
    return model.eval()


def _read_tensors(found: dict[str, TensorInfo], layout: Layout, dtype: torch.dtype,
                  device: torch.device) -> dict[str, torch.Tensor]:
    prefix = "" if layout.masked_lm else layout.prefix
    by_file: dict[Path, list[str]] = {}
    for name, info in found.items():
        if info.dtype not in _DTYPES:
            raise CheckpointError(f"tensor {name} in {info.file} has dtype {info.dtype}; floating "
                                  f"point weights were expected.")
        by_file.setdefault(info.file, []).append(name)
    state = {}
    for file, names in by_file.items():
        try:
            with safe_open(str(file), framework="pt") as handle:
                for name in names:
                    state[name.removeprefix(prefix)] = handle.get_tensor(name).to(device=device,
                                                                                  dtype=dtype)
        except (SafetensorError, OSError, ValueError) as err:
            raise CheckpointError(f"weights file {file} is truncated or corrupted ({err}).") from None
    if not layout.fused_qkv:
        for name in [n for n in state if n.endswith(".self.query.weight") or
                     n.endswith(".self.query.bias")]:
            parts = [state.pop(name.replace("query", part)) for part in QKV]
            state[name.replace("query", "Wqkv")] = torch.cat(parts, dim=0)
    return state
