"""A checkpoint directory, opened: :class:`CheckpointDir` and what it is made of.

``CheckpointDir.open(path)`` is the one way into a checkpoint directory, for loading, verify,
encode, fill-mask, training and embed-corpus. It reads, and checks, everything that can be read
without building a model: the sentence-transformers layout (:class:`Pipeline`: ``modules.json``,
the pooling and ``sentence_bert_config.json`` settings, where the transformer lives), the
transformer's ``config.json`` values, the tensor index of its safetensors file(s) and the
:class:`Layout` those tensor names describe. The helpers below it (tensor reading, geometry checks,
mismatch reports, the QKV fuse and split) are shared by loading, verify, convert and training.

Three layouts are recognised from the tensor names alone:

* sentence-transformers / lodestone: ``BertModel`` keys at the root, with ``pooler.dense.*``;
* masked LM: ``bert.``-prefixed encoder plus ``cls.predictions.*``; the decoder weight is tied to
  the word embeddings and may be absent from the file;
* bare encoder: ``BertModel`` keys with or without the ``bert.`` prefix, with or without pooler.

Classic BERT checkpoints (e.g. all-MiniLM-L6-v2) store ``attention.self.query/key/value``
separately; :func:`expected_tensors` lists them so, and loading fuses them into ``Wqkv``.

Nothing here trusts a file before checking it: shards must be regular files inside the
checkpoint directory, a safetensors header may not name a tensor twice (the reader would keep
one entry and re-type the other's bytes), and :func:`check_geometry` compares ``config.json``
with the stored shapes before any model is built, so a config asking for 10⁹ layers or 2⁶²
vocabulary rows is one sentence instead of a memory bomb.
"""

from __future__ import annotations

import itertools
import json
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import torch
from einops import rearrange
from safetensors import SafetensorError, safe_open
from torch import nn

from .api_arguments import path_arg
from .config import AXES, MosaicConfig, read_config_values, scheme_options
from .errors import ArgumentError, CheckpointError, ConfigError, InputError
from .feed_forward import FEED_FORWARDS
from .files import inside, json_object, printable, read_json, regular_file, resolve, short
from .hub import is_hub_id, snapshot
from .models import MosaicBertForMaskedLM, MosaicBertModel
from .pooling import Pooling

WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
TIED_DECODER = "cls.predictions.decoder.weight"
TIED_SOURCE = "bert.embeddings.word_embeddings.weight"
# Buffers some writers store that carry no information (positions 0..N-1).
IGNORED = ("embeddings.position_ids",)
QKV = ("query", "key", "value")
# Stored dtypes a weight may have (safetensors' names).
FLOAT_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16,
                "BF16": torch.bfloat16}
# The safetensors format caps its JSON header at 100 MB.
MAX_HEADER_BYTES = 100_000_000
# How many items of a mismatch list an error message names before "and N more".
REPORT_LIMIT = 10
# The tokenizer's files, beside the transformer's config.json (those present are copied on save).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "vocab.txt")
# Longest max_seq_length a sentence-transformers config may ask for (2**20 tokens).
MAX_SEQ_LENGTH = 1 << 20
# sentence-transformers' module types this encoder runs, by class name, and the role of each:
# this package's own module (written by sentence-transformers' save) holds the transformer too.
MODULE_TYPES = {"Transformer": "Transformer", "MosaicEncoderModule": "Transformer",
                "Pooling": "Pooling", "Normalize": "Normalize"}
# A layer counts as stored when its attention projection is: stray names do not add layers.
_LAYER = re.compile(r"encoder\.layer\.(\d{1,9})\.attention\.self\.(Wqkv|query)\.weight$")
_LAYER_NAME = re.compile(r"^(.*\.layer\.)(\d+)\.(.+)$")


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

    @property
    def optional(self) -> set[str]:
        """Stored names the model needs but the file may leave out (a tied decoder)."""
        return {TIED_DECODER} if self.masked_lm else set()


def build_model(config: MosaicConfig, layout: Layout) -> nn.Module:
    """The model class a layout stores, freshly initialised on the current default device.

    Build under ``torch.device("meta")`` to get the structure without allocating weights.
    """
    if layout.masked_lm:
        return MosaicBertForMaskedLM(config)
    return MosaicBertModel(config, add_pooler=layout.pooler)


# sentence-transformers' own settings beside modules.json: prompts, the default prompt name.
ST_SETTINGS_FILE = "config_sentence_transformers.json"


# --- the directory ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Pipeline:
    """The sentence-transformers layout: where the transformer lives and what ``modules.json`` and
    its module configs say to do after it (a bare checkpoint: mean pooling, nothing else)."""

    transformer_dir: Path
    pooling: Pooling
    normalize: bool
    max_seq_length: int | None
    do_lower_case: bool
    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt_name: str | None = None

    @classmethod
    def from_directory(cls, directory: str | Path) -> Pipeline:
        """Read a sentence-transformers directory; a bare checkpoint gets mean pooling.

        Every file read must be a regular file inside ``directory`` and every field read must
        have the type sentence-transformers writes; anything else is a :class:`CheckpointError`.
        """
        directory = Path(directory)
        modules_file = directory / "modules.json"
        if not (modules_file.exists() or modules_file.is_symlink()):
            # A bare checkpoint: sentence-transformers' default is mean pooling.
            return cls(directory, Pooling(), False, None, False)
        transformer_dir, pooling, normalize = directory, Pooling(), False
        for number, (kind, module_dir) in enumerate(_modules(modules_file, directory), start=1):
            if kind == "Transformer":
                if not module_dir.is_dir():
                    raise CheckpointError(f"{modules_file} entry {number} names the transformer "
                                          f"directory {printable(module_dir)}, which does not "
                                          f"exist.")
                transformer_dir = module_dir
            elif kind == "Pooling":
                pooling = Pooling.from_json_file(module_dir / "config.json", root=directory)
            else:
                normalize = True
        st_config_file = transformer_dir / "sentence_bert_config.json"
        max_seq_length, do_lower_case = None, False
        if st_config_file.exists() or st_config_file.is_symlink():
            max_seq_length, do_lower_case = _sentence_bert_config(st_config_file, directory)
        prompts, default_prompt_name = _prompts(directory / ST_SETTINGS_FILE, directory)
        return cls(transformer_dir, pooling, normalize, max_seq_length, do_lower_case, prompts,
                   default_prompt_name)

    def prompt(self, prompt: str | None, prompt_name: str | None) -> str | None:
        """The text to put before every input, as sentence-transformers chooses it: ``prompt``
        itself when given, else the prompt named ``prompt_name``, else the directory's default
        prompt (none unless ``default_prompt_name`` is set)."""
        if prompt is not None:
            return prompt
        name = prompt_name if prompt_name is not None else self.default_prompt_name
        if name is None:
            return None
        if name not in self.prompts:
            known = ", ".join(sorted(self.prompts)) or "none"
            raise InputError(f"prompt name {short(name, quote=True)} is not among this "
                             f"checkpoint's prompts ({known}; {ST_SETTINGS_FILE}).")
        return self.prompts[name]


def _modules(path: Path, directory: Path) -> list[tuple[str, Path]]:
    """(module class name, module directory) of every ``modules.json`` entry, checked."""
    modules = read_json(path, "modules file", directory)
    if not isinstance(modules, list):
        raise CheckpointError(f"modules file {path} must hold a JSON array of modules, got "
                              f"{type(modules).__name__}.")
    entries = []
    for number, module in enumerate(modules, start=1):
        if not isinstance(module, dict):
            raise CheckpointError(f"modules file {path} entry {number} is not a JSON object.")
        kind, where = module.get("type"), module.get("path", "")
        if not isinstance(kind, str) or not isinstance(where, str):
            raise CheckpointError(f"modules file {path} entry {number} needs string 'type' and "
                                  f"'path' fields.")
        role = MODULE_TYPES.get(kind.rsplit(".", 1)[-1])
        if role is None:
            raise CheckpointError(f"{path} names module type {short(kind, quote=True)}, which this "
                                  f"encoder does not support.")
        module_dir = directory / where
        inside(module_dir, directory, f"modules file {path} entry {number}: path")
        entries.append((role, module_dir))
    return entries


def _prompts(path: Path, directory: Path) -> tuple[dict[str, str], str | None]:
    """``prompts`` (name -> text) and ``default_prompt_name`` of a
    ``config_sentence_transformers.json``; none when the file is absent."""
    if not (path.exists() or path.is_symlink()):
        return {}, None
    values = json_object(read_json(path, "sentence-transformers settings", directory),
                         "sentence-transformers settings", path)
    prompts = values.get("prompts") or {}
    if not isinstance(prompts, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in prompts.items()):
        raise CheckpointError(f"sentence-transformers settings {printable(path)}: prompts must map "
                              f"names to strings.")
    default = values.get("default_prompt_name")
    if default is not None and default not in prompts:
        raise CheckpointError(f"sentence-transformers settings {printable(path)}: "
                              f"default_prompt_name {short(default, quote=True)} names no prompt.")
    return prompts, default


def _sentence_bert_config(path: Path, directory: Path) -> tuple[int | None, bool]:
    """``max_seq_length`` (None or an integer >= 2) and ``do_lower_case`` (a boolean)."""
    values = json_object(read_json(path, "sentence-transformers config", directory),
                         "sentence-transformers config", path)
    max_seq_length = values.get("max_seq_length")
    if max_seq_length is not None and (isinstance(max_seq_length, bool) or not isinstance(
            max_seq_length, int) or not 2 <= max_seq_length <= MAX_SEQ_LENGTH):
        raise CheckpointError(f"sentence-transformers config {path}: max_seq_length must be an "
                              f"integer in [2, {MAX_SEQ_LENGTH}] or null, got "
                              f"{short(max_seq_length)}.")
    do_lower_case = values.get("do_lower_case", False)
    if not isinstance(do_lower_case, bool):
        raise CheckpointError(f"sentence-transformers config {path}: do_lower_case must be true "
                              f"or false, got {short(do_lower_case)}.")
    return max_seq_length, do_lower_case


@dataclass(frozen=True)
class CheckpointDir:
    """A checkpoint directory, opened: every file that describes it read and checked, no tensor
    loaded and no model built.

    Attributes:
        path: the directory as given (a sentence-transformers directory or a bare checkpoint).
        pipeline: its sentence-transformers layout; ``pipeline.transformer_dir`` holds the
            transformer's ``config.json``, weights and ``tokenizer.json``.
        config_values: the transformer's ``config.json`` mapping, as read (see
            :meth:`config` for the checked :class:`MosaicConfig`).
        tensors: name -> :class:`TensorInfo` of every stored weight (buffers that carry no
            information, ``position_ids``, left out).
        layout: which model class and key prefix the tensor names describe.
    """

    path: Path
    pipeline: Pipeline
    config_values: dict
    tensors: dict[str, TensorInfo]
    layout: Layout

    @classmethod
    def open(cls, path: str | Path | CheckpointDir, revision: str | None = None) -> CheckpointDir:
        """Open ``path`` (an opened directory is returned as it is): a directory, a Hugging Face
        cache snapshot, or a Hub id ``org/name`` at ``revision`` (see
        :func:`checkpoint_directory`).

        Raises:
            CheckpointError, ConfigError: one sentence naming the file at fault: the directory
                does not exist, a file is missing, malformed, not a regular file or outside the
                directory (a symlink out of it, a ``modules.json`` path with ``..``; the tokenizer
                files are checked too), the weights are not those of a BERT-family encoder.
        """
        if isinstance(path, CheckpointDir):
            return path
        directory = checkpoint_directory(path, revision)
        pipeline = Pipeline.from_directory(directory)
        config_file = pipeline.transformer_dir / "config.json"
        regular_file(config_file, "config file", directory, ConfigError)
        for name in TOKENIZER_FILES:
            file = pipeline.transformer_dir / name
            if file.is_symlink():
                inside(file, directory, "tokenizer file")
        values = read_config_values(config_file)
        found = read_tensor_index(pipeline.transformer_dir)
        layout = detect_layout(set(found), printable(pipeline.transformer_dir))
        return cls(directory, pipeline, values, without_ignored(found, layout), layout)

    @property
    def transformer_dir(self) -> Path:
        return self.pipeline.transformer_dir

    @property
    def config_file(self) -> Path:
        return self.transformer_dir / "config.json"

    def config(self, **run_time) -> MosaicConfig:
        """The checked config (run-time choices such as ``attention_impl`` from ``run_time``)."""
        return MosaicConfig.from_dict(self.config_values,
                                      source=f"config file {self.config_file}").replace(**run_time)


def checkpoint_directory(path: str | Path, revision: str | None = None) -> Path:
    """The checkpoint directory ``path`` names: a local directory (a Hugging Face cache snapshot
    included), else, for a string ``org/name`` that is no local path, the snapshot of that Hub
    model at ``revision`` (:func:`mosaic_encoder.hub.snapshot`: the cache, or a download).

    Raises:
        CheckpointError: the path is a file (its folder is named), does not exist, or names a Hub
            model that cannot be had; ``revision`` given with a local directory.
    """
    directory = path_arg(path, "checkpoint path")
    resolve(directory, "checkpoint directory")  # a symlink loop or a NUL byte: one sentence
    if revision is not None and not isinstance(revision, str):
        raise ArgumentError(f"revision must be a str (a branch, tag or commit), got "
                            f"{type(revision).__name__}.")
    if directory.is_dir():
        if revision is not None:
            raise CheckpointError(f"checkpoint directory {short(str(directory), 200)} is a local "
                                  f"directory; a revision ({short(revision, 60)}) applies to "
                                  f"Hugging Face Hub ids only.")
        return directory
    if directory.exists():
        raise CheckpointError(f"checkpoint path {short(str(directory), 200)} is a file, not a "
                              f"checkpoint directory; pass the folder that holds it, "
                              f"{short(str(directory.parent), 200)}.")
    if is_hub_id(path):
        return snapshot(path, revision)
    raise CheckpointError(f"checkpoint directory {short(str(directory), 200)} does not exist.")


# --- QKV fuse and split -----------------------------------------------------------------------


def fuse_qkv(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Classic BERT's separate ``attention.self.{query,key,value}`` weights (H, H) and biases (H,)
    as the packed ``Wqkv`` projection, (3H, H) and (3H,): its output features are [Q | K | V].

    Every other entry is kept as it is, in order; each query needs its key and value.
    """
    fused = {}
    for name, tensor in state.items():
        if ".self.query." in name:
            parts = [state[name.replace(".self.query.", f".self.{part}.")] for part in QKV]
            fused[name.replace(".self.query.", ".self.Wqkv.")] = rearrange(
                parts, "part features ... -> (part features) ...")
        elif ".self.key." not in name and ".self.value." not in name:
            fused[name] = tensor
    return fused


def split_qkv(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of :func:`fuse_qkv`: each packed ``Wqkv`` (3H, ...) as ``query``, ``key`` and
    ``value`` (H, ...) entries (views of it), everything else kept as it is."""
    split = {}
    for name, tensor in state.items():
        if ".self.Wqkv." in name:
            parts = rearrange(tensor, "(part features) ... -> part features ...", part=len(QKV))
            split.update({name.replace(".self.Wqkv.", f".self.{part}."): piece
                          for part, piece in zip(QKV, parts)})
        else:
            split[name] = tensor
    return split


# --- reading ----------------------------------------------------------------------------------


def _check_header(file: Path) -> None:
    """Refuse a safetensors header that names a tensor twice.

    The Rust reader keeps the last entry of a duplicated key, so a second entry can re-type
    (or re-shape) bytes the first one describes; no writer produces one.
    """
    try:
        with open(file, "rb") as stream:
            prefix = stream.read(8)
            if len(prefix) < 8:
                return  # safe_open reports the truncation
            (length,) = struct.unpack("<Q", prefix)
            if length > MAX_HEADER_BYTES:
                return  # safe_open reports the oversized header
            header = stream.read(length)
    except OSError as err:
        raise CheckpointError(f"weights file {printable(file)} cannot be read "
                              f"({err.strerror}).") from None

    def no_duplicates(pairs: list[tuple[str, object]]) -> dict:
        seen = set()
        for key, _ in pairs:
            if key in seen:
                raise CheckpointError(f"weights file {printable(file)} lists tensor "
                                      f"{short(key)} twice in its header.")
            seen.add(key)
        return dict(pairs)

    try:
        json.loads(header.decode("utf-8"), object_pairs_hook=no_duplicates)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return  # not JSON: safe_open reports it


def read_header(file: str | Path, root: str | Path | None = None) -> dict[str, TensorInfo]:
    """Names, shapes and stored dtypes of the tensors in one safetensors file."""
    file = regular_file(file, "weights file", root)
    _check_header(file)
    try:
        with safe_open(str(file), framework="pt") as handle:
            infos = {}
            for name in handle.keys():
                sliced = handle.get_slice(name)
                infos[name] = TensorInfo(file, tuple(sliced.get_shape()), sliced.get_dtype())
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"weights file {printable(file)} is truncated or not a safetensors "
                              f"file ({short(str(err), 200)}).") from None
    return infos


def read_tensor_index(directory: str | Path) -> dict[str, TensorInfo]:
    """Names, shapes and dtypes of every tensor in a checkpoint directory (single or sharded)."""
    directory = Path(directory)
    single, index = directory / WEIGHTS_NAME, directory / INDEX_NAME
    if single.exists() or single.is_symlink():
        return read_header(single, directory)
    if index.exists() or index.is_symlink():
        return _read_sharded(directory, index)
    if (directory / "pytorch_model.bin").is_file():
        raise CheckpointError(f"{printable(directory)} holds only pytorch_model.bin; convert it "
                              f"first with `mosaic-encoder convert {printable(directory)}`.")
    raise CheckpointError(f"{printable(directory)} has no {WEIGHTS_NAME} or {INDEX_NAME}.")


def _read_sharded(directory: Path, index: Path) -> dict[str, TensorInfo]:
    values = json_object(read_json(index, "shard index", directory), "shard index", index)
    weight_map = values.get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(f"shard index {index} has no weight_map object naming the shards.")
    bad = [name for name, shard in weight_map.items() if not isinstance(shard, str) or not shard]
    if bad:
        raise CheckpointError(f"shard index {index} maps {short(bad[0])} to "
                              f"{short(weight_map[bad[0]])}, not a shard file name.")
    infos: dict[str, TensorInfo] = {}
    for shard in sorted(set(weight_map.values())):
        infos.update(read_header(directory / shard, directory))
    listed = {n for n, shard in weight_map.items()
              if n in infos and infos[n].file == directory / shard}
    if listed != set(weight_map):
        missing = sorted(set(weight_map) - listed)
        raise CheckpointError(f"shard index {index} lists tensors its shards do not hold: "
                              f"{summarise([short(n) for n in missing], REPORT_LIMIT)}.")
    return infos


def iter_tensors(found: dict[str, TensorInfo],
                 names: Iterable[str] | None = None) -> Iterator[tuple[str, torch.Tensor]]:
    """The stored tensors (all, or ``names``) one at a time, as stored, grouped by file."""
    by_file: dict[Path, list[str]] = {}
    for name in found if names is None else names:
        by_file.setdefault(found[name].file, []).append(name)
    for file, file_names in by_file.items():
        try:
            with safe_open(str(file), framework="pt") as handle:
                for name in file_names:
                    yield name, handle.get_tensor(name)
        except (SafetensorError, OSError, ValueError) as err:
            raise CheckpointError(f"weights file {printable(file)} is truncated or corrupted "
                                  f"({str(err)[:200]}).") from None


def read_tensor(found: dict[str, TensorInfo], name: str) -> torch.Tensor:
    """One stored tensor, as stored."""
    return next(iter_tensors(found, [name]))[1]


# --- layout and geometry ----------------------------------------------------------------------


def detect_layout(names: set[str], source: str) -> Layout:
    """Recognise the layout from tensor names; a checkpoint of another architecture is an error."""
    if any(n.startswith("cls.predictions.") for n in names):
        masked_lm, prefix, pooler = True, "bert.", False
    else:
        prefix = "bert." if names and all(n.startswith("bert.") for n in names) else ""
        masked_lm, pooler = False, f"{prefix}pooler.dense.weight" in names
    if f"{prefix}embeddings.word_embeddings.weight" not in names:
        raise CheckpointError(f"{source} is not a BERT-family checkpoint (no "
                              f"{prefix}embeddings.word_embeddings.weight).")
    fused = any(n.endswith("attention.self.Wqkv.weight") for n in names)
    if not fused and not any(n.endswith("attention.self.query.weight") for n in names):
        raise CheckpointError(f"{source} has neither attention.self.Wqkv nor "
                              f"attention.self.query weights: not a BERT-family encoder.")
    return Layout(masked_lm, prefix, pooler, fused_qkv=fused)


def without_ignored(found: dict[str, TensorInfo], layout: Layout) -> dict[str, TensorInfo]:
    """The index without stored buffers that carry no weights (``position_ids``)."""
    return {n: info for n, info in found.items() if n.removeprefix(layout.prefix) not in IGNORED}


def check_family(config: MosaicConfig, names: set[str], layout: Layout, source: str) -> None:
    """One sentence when config.json and the weights describe different designs.

    The tensor names of a model of ``config``'s design are compared with the stored names of the
    embeddings, the position scheme and layer 0. When they differ and other designs (the axes of
    :data:`~mosaic_encoder.config.AXES` and the position schemes' true/false options) would make
    them agree, the sentence names those that change the fewest fields; designs with the same
    tensors (GLU and SwiGLU, ALiBi and RoPE) are named together. Otherwise loading's detailed
    tensor report speaks.
    """
    stored = {name for name in names - layout.optional
              if not (match := _LAYER_NAME.match(name)) or match[2] == "0"}
    if _structure(config, layout) == stored:
        return
    matching = [changes for changes in _design_alternatives(config)
                if _structure(config.replace(**changes), layout) == stored]
    if matching:
        fewest = [config.replace(**changes).describe_variant() for changes in matching
                  if len(changes) == len(matching[0])]
        raise CheckpointError(f"{source}: config.json describes {config.describe_variant()}, but "
                              f"the weights are those of {' or '.join(fewest)}.")


def _design_alternatives(config: MosaicConfig) -> list[dict[str, object]]:
    """Every other valid design of ``config``'s geometry, as the fields that change, fewest
    first."""
    choices = {field: list(registry) for field, registry in AXES.items()}
    choices.update({name: [False, True] for name in scheme_options()
                    if isinstance(getattr(config, name), bool)})
    designs = []
    for values in itertools.product(*choices.values()):
        changes = {field: value for field, value in zip(choices, values)
                   if value != getattr(config, field)}
        try:
            if changes:
                config.replace(**changes)
        except ConfigError:
            continue
        if changes:
            designs.append(changes)
    return sorted(designs, key=len)


def _structure(config: MosaicConfig, layout: Layout) -> set[str]:
    """Stored names of a model of ``config``'s design in ``layout``, with one layer standing for
    all: names do not depend on sizes, so a minimal geometry is built (on the meta device), and
    a config asking for 10^18 vocabulary rows costs nothing here."""
    minimal = config.replace(num_hidden_layers=1, vocab_size=config.pad_token_id + 1,
                             hidden_size=2, num_attention_heads=1, intermediate_size=1,
                             type_vocab_size=1, max_position_embeddings=1)
    with torch.device("meta"):
        model = build_model(minimal, layout)
    return set(expected_tensors(model, layout)) - layout.optional


def stored_geometry(found: dict[str, TensorInfo], layout: Layout) -> dict[str, int]:
    """The config fields the stored shapes fix: layers, hidden, vocabulary, intermediate, ..."""
    prefix = layout.prefix
    geometry: dict[str, int] = {}

    def rows(name: str, dims: int = 2) -> tuple[int, ...] | None:
        info = found.get(prefix + name)
        return info.shape if info is not None and len(info.shape) == dims else None

    if shape := rows("embeddings.word_embeddings.weight"):
        geometry["vocab_size"], geometry["hidden_size"] = shape
    if shape := rows("embeddings.token_type_embeddings.weight"):
        geometry["type_vocab_size"] = shape[0]
    if shape := rows("embeddings.position_embeddings.weight"):
        geometry["max_position_embeddings"] = shape[0]
    layers = {int(m[1]) for n in found if (m := _LAYER.match(n.removeprefix(prefix)))}
    geometry["num_hidden_layers"] = max(layers) + 1 if layers else 0
    for block in FEED_FORWARDS.values():
        name, rows_per_unit = block.intermediate_weight
        if shape := rows(f"encoder.layer.0.{name}"):
            geometry["intermediate_size"] = shape[0] // rows_per_unit
            break
    return geometry


def check_geometry(config: MosaicConfig, found: dict[str, TensorInfo], layout: Layout,
                   source: str) -> None:
    """Refuse a config whose geometry differs from the stored shapes, before building a model.

    A config can ask for any size; only one that agrees with the weights on disk is built, so a
    model never costs more memory than its files.
    """
    problems = geometry_problems(config, found, layout)
    if problems:
        raise CheckpointError(f"{source}: config.json does not match the stored weights: "
                              f"{summarise(problems, REPORT_LIMIT)}.")


def geometry_problems(config: MosaicConfig, found: dict[str, TensorInfo],
                      layout: Layout) -> list[str]:
    """One phrase per config field whose value the stored shapes contradict."""
    return [f"{key} is {short(getattr(config, key))} but the weights have {value}"
            for key, value in stored_geometry(found, layout).items()
            if getattr(config, key) != value]


def stored_state(model: nn.Module, layout: Layout) -> dict[str, torch.Tensor]:
    """The model's tensors (not copied) under the names a file of ``layout`` stores them by."""
    prefix = "" if layout.masked_lm else layout.prefix
    state = model.state_dict(keep_vars=True)
    if not layout.fused_qkv:
        state = split_qkv(state)
    return {prefix + name: tensor for name, tensor in state.items()}


def expected_tensors(model: nn.Module, layout: Layout) -> dict[str, tuple[int, ...]]:
    """Names (as stored in files) and shapes of every tensor the model needs."""
    return {name: tuple(tensor.shape) for name, tensor in stored_state(model, layout).items()}


# --- mismatch reports ---------------------------------------------------------------------------


def missing_and_stray(expected: dict[str, tuple[int, ...]], found: dict[str, TensorInfo],
                      optional: set[str] = frozenset()) -> tuple[list[str], list[str]]:
    """Expected names the checkpoint lacks and stored names nothing expects, sorted."""
    return sorted(set(expected) - set(found) - optional), sorted(set(found) - set(expected))


def wrong_shapes(expected: dict[str, tuple[int, ...]],
                 found: dict[str, TensorInfo]) -> list[tuple[str, tuple[int, ...], tuple[int, ...]]]:
    """(name, expected shape, stored shape) for every shared name whose shapes differ, sorted."""
    return [(name, tuple(expected[name]), tuple(found[name].shape))
            for name in sorted(set(expected) & set(found))
            if tuple(found[name].shape) != tuple(expected[name])]


def mismatch_report(expected: dict[str, tuple[int, ...]], found: dict[str, TensorInfo],
                    optional: set[str] = frozenset()) -> list[str]:
    """One phrase per missing, unexpected or misshapen tensor."""
    missing, stray = missing_and_stray(expected, found, optional)
    return ([f"missing {name} (expected shape {list(expected[name])})" for name in missing]
            + [f"unexpected {short(name)} (found shape {list(found[name].shape)})"
               for name in stray]
            + [f"wrong shape for {name} (expected {list(want)}, found {list(have)})"
               for name, want, have in wrong_shapes(expected, found)])


def summarise(items: list[str], limit: int = 4) -> str:
    """'a, b, c, d and 12 more': a long list kept to one readable line."""
    shown = ", ".join(items[:limit])
    return shown if len(items) <= limit else f"{shown} and {len(items) - limit} more"


def summarise_names(names: list[str], limit: int = 4) -> str:
    """Tensor names in one line: whole runs of layers collapse ('encoder.layer.2-11, 11 each')."""
    per_layer: dict[tuple[str, int], set[str]] = {}
    others = []
    for name in names:
        match = _LAYER_NAME.match(name)
        if match and len(match[2]) < 10:
            per_layer.setdefault((match[1], int(match[2])), set()).add(match[3])
        else:
            others.append(name)
    full = {}
    if per_layer:
        # Layers whose every listed tensor set is the same are reported as one range.
        sets = {frozenset(v) for v in per_layer.values()}
        prefixes = {p for p, _ in per_layer}
        if len(sets) == 1 and len(prefixes) == 1 and len(per_layer) > 1:
            indices = sorted(i for _, i in per_layer)
            if indices == list(range(indices[0], indices[-1] + 1)):
                prefix = next(iter(prefixes))
                full[f"{short(prefix)}{indices[0]}-{indices[-1]}.* "
                     f"({len(next(iter(sets)))} each)"] = True
    if not full:
        return summarise([short(n) for n in sorted(names)], limit)
    return summarise(list(full) + [short(n) for n in sorted(others)], limit)

