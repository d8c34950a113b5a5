"""Checks that a checkpoint directory is what it claims to be, as a library.

:func:`verify_checkpoint` returns one :class:`CheckResult` per check (name, passed, detail); the
``mosaic-encoder verify`` command formats them. The checks, in order:

* ``manifest``: which published manifest the directory is compared with (given, chosen by the
  config's architecture and geometry, or none: structural checks only);
* config sanity: the values describe a buildable model (heads divide hidden, ...), the config's
  ``architectures`` agrees with the weights' layout, the embedding has at least as many rows as
  the tokenizer has entries;
* tokenizer sanity: ``tokenizer.json`` parses, the special tokens exist with distinct ids inside
  the vocabulary, ``[PAD]`` is the config's ``pad_token_id``, texts become ``[CLS] ... [SEP]``
  (and the bert-base-uncased ids when compared with a published manifest);
* structure: tensor names, shapes and dtypes against the model built from ``config.json``, tied
  weights, the parameter count; against the manifest as well when there is one;
* numeric health, reading one tensor at a time: all values finite, no all-zero tensor (biases
  excepted: zero is their initial value, e.g. in a pooler that was never trained), LayerNorm
  weights of plausible size;
* optionally the golden equivalence: outputs of :func:`mosaic_encoder.load_model` on the inputs of
  a reference-output file, within the tolerances of ``tests/data/README.md``; the sentence
  embedding pooled (and normalised) as ``modules.json`` says; and, for a case whose texts the file
  carries, their tokenization as the checkpoint says (``tokenizer.json``, ``max_seq_length``,
  ``do_lower_case``), so the tokenizer and the sentence-transformers settings are checked as
  well as the weights.

Problems that leave nothing to check (a missing directory, a file reached through a symlink out
of it, a ``config.json`` that is not JSON or misses a field, a truncated weights file, a
checkpoint of another architecture, an unreadable golden file or manifest) raise
:class:`~mosaic_encoder.errors.MosaicError` instead.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open

from .api_arguments import optional_path_arg
from .checkpoint import (FLOAT_DTYPES, TIED_DECODER, TIED_SOURCE, CheckpointDir, Pipeline,
                         build_model, check_family, checkpoint_directory, expected_tensors,
                         geometry_problems, iter_tensors, missing_and_stray, read_tensor, short,
                         summarise, summarise_names, wrong_shapes)
from .config import MosaicConfig
from .dtypes import DTYPES
from .errors import CheckpointError, ConfigError, MosaicError
from .files import file_sha256, inside, read_json
from .loading import load_model
from .manifest import PUBLISHED, load_manifest
from .tokenizer import TextTokenizer

# bert-base-uncased's special token ids, which both published checkpoints use (their
# tokenizer.json is bert-base-uncased's, as is that of the bundled weights/mosaic-tiny*).
BERT_SPECIAL_IDS = {"[PAD]": 0, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102, "[MASK]": 103}
# Tolerances of the golden equivalence in float32 (tests/data/README.md).
GOLDEN_MAX_ABS = 1e-4
GOLDEN_MIN_COSINE = 0.99999
# A LayerNorm weight whose mean magnitude lies outside this range is not a trained scale.
LAYERNORM_MEAN_ABS = (0.05, 20.0)
# Config values that fix the geometry, compared with a manifest's config.
_GEOMETRY = ("architectures", "hidden_size", "num_hidden_layers", "num_attention_heads",
             "intermediate_size", "vocab_size", "type_vocab_size", "layer_norm_eps", "pad_token_id")
_LAYERNORM = re.compile(r"(LayerNorm|layernorm|layer_norm|norm)\.weight$")


@dataclass(frozen=True)
class CheckResult:
    """One check: a short name, whether it passed, and a one-line detail."""

    name: str
    passed: bool
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class FileDigest:
    """A file of the checkpoint directory (path relative to it), its size and sha256."""

    path: str
    size: int
    sha256: str

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def verify_checkpoint(directory: str | Path, against: str | Path | None = None,
                      golden: str | Path | None = None, device: torch.device | str = "cpu",
                      revision: str | None = None) -> list[CheckResult]:
    """Run every check on a checkpoint directory.

    Args:
        directory: checkpoint directory (``config.json``, ``model.safetensors`` or a sharded
            index, ``tokenizer.json``), a Hugging Face cache snapshot, or a Hub id ``org/name``
            (at ``revision``; see :func:`mosaic_encoder.load_model`).
        against: a published checkpoint name (see :data:`mosaic_encoder.manifest.PUBLISHED`) or a
            manifest JSON file; by default the published manifest whose config matches, if any.
        golden: a reference-output file (``CASE.FIELD`` keys, see ``tests/data/README.md``) to
            compare the model's float32 outputs with.
        device: where the golden comparison runs.
    Returns:
        The check results, in order; the checkpoint is sound when every ``passed`` is true.
    Raises:
        MosaicError: with one sentence, when the directory cannot be checked at all.
    """
    optional_path_arg(against, "against")
    golden = optional_path_arg(golden, "golden")
    checkpoint = CheckpointDir.open(directory, revision)
    directory, values = checkpoint.transformer_dir, checkpoint.config_values
    found, layout = checkpoint.tensors, checkpoint.layout
    missing = MosaicConfig.missing_fields(values)
    if missing:
        raise ConfigError(f"config file {checkpoint.config_file} is missing the field(s) "
                          f"{', '.join(missing)}.")
    manifest, manifest_row = _pick_manifest(values, against)
    golden_file = _read_golden(Path(golden)) if golden is not None else None

    results = [manifest_row]
    config, config_row = _config_values(values, directory)
    results.append(config_row)
    results.append(_config_architecture(values, config, found, layout, directory))
    tokenizer_rows, tokenizer = _tokenizer_checks(directory, config, manifest is not None)
    results += tokenizer_rows
    results.append(_vocab_rows(values, found, layout, tokenizer))
    results += _structure_checks(config, found, layout)
    results.append(_tied_weights(found, layout))
    if manifest is not None:
        results += _manifest_checks(values, found, layout, manifest)
    results += _numeric_checks(found)
    if golden_file is not None:
        results += _golden_checks(checkpoint, golden_file, Path(golden), device)
    return results


def file_digests(directory: str | Path, revision: str | None = None) -> list[FileDigest]:
    """sha256 of every regular file in the directory and its sub-directories (hidden ones
    skipped, FIFOs and devices not read); of a symlink, the file it leads to.

    A symlink whose target lies outside the directory is refused, as loading refuses it: its
    target is not part of the checkpoint, and its digest would reveal a file that is not. In a
    Hugging Face cache snapshot the files are links into the repository's ``blobs/``: those are
    hashed, and a link leaving the ``models--*`` folder is refused (:func:`.files.inside`).
    """
    directory = checkpoint_directory(directory, revision)
    digests = []
    for path in sorted(directory.rglob("*")):
        relative = path.relative_to(directory)
        if any(part.startswith(".") for part in relative.parts):
            continue
        inside(path, directory, "file")
        if path.is_file():
            digests.append(FileDigest(relative.as_posix(), path.stat().st_size,
                                      file_sha256(path)))
    return digests


def select_manifest(values: dict[str, Any]) -> str | None:
    """The published checkpoint whose config has this config's architecture and geometry."""
    for name in PUBLISHED:
        published = load_manifest(name)["config"]
        if all(values.get(key) == published.get(key) for key in
               ("architectures", "hidden_size", "num_hidden_layers", "num_attention_heads")):
            return name
    return None


# --- reading -------------------------------------------------------------------------------


def _pick_manifest(values: dict[str, Any], against: str | Path | None):
    if against is not None:
        manifest = load_manifest(against)
        name = short(str(manifest.get("checkpoint", against)), 200)
        return manifest, CheckResult("manifest", True, f"comparing with {name} (as asked)")
    name = select_manifest(values)
    if name is None:
        return None, CheckResult(
            "manifest", True, f"no published manifest has this geometry "
            f"({short(values.get('architectures'))}, hidden {short(values.get('hidden_size'))}): "
            f"structural checks only")
    return load_manifest(name), CheckResult(
        "manifest", True, f"comparing with {name} (its config's architecture and geometry match)")


@dataclass(frozen=True)
class Golden:
    """A reference-output file: its tensors (``CASE.FIELD``) and, per case that has them, the
    texts its ``input_ids`` tokenize (metadata ``CASE.texts``, a JSON array of strings)."""

    tensors: dict[str, torch.Tensor]
    texts: dict[str, list[str]]


def _read_golden(path: Path) -> Golden:
    if not path.is_file():
        raise CheckpointError(f"golden file {path} does not exist.")
    try:
        with safe_open(str(path), framework="pt") as handle:
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"golden file {path} is truncated or not a safetensors file "
                              f"({err}).") from None
    if not any(name.endswith(".input_ids") for name in tensors):
        raise CheckpointError(f"golden file {path} has no CASE.input_ids tensors, so it holds no "
                              f"case to compare.")
    texts = {}
    for key, value in metadata.items():
        if not key.endswith(".texts"):
            continue
        try:
            parsed = json.loads(value)
        except (ValueError, RecursionError):
            parsed = None
        if not isinstance(parsed, list) or not all(isinstance(t, str) for t in parsed):
            raise CheckpointError(f"golden file {path}: metadata {short(key)} must be a JSON "
                                  f"array of strings.")
        texts[key.removesuffix(".texts")] = parsed
    for key, positions in tensors.items():
        if key.endswith(".logit_positions"):
            _check_positions(path, key, positions, tensors.get(key.replace(".logit_positions",
                                                                            ".input_ids")))
    return Golden(tensors, texts)


def _check_positions(path: Path, key: str, positions: torch.Tensor,
                     ids: torch.Tensor | None) -> None:
    """Refuse ``CASE.logit_positions`` that are not (P, 2) integer (row, token) pairs inside
    ``CASE.input_ids`` (B, S): indexing the logits with them would fail or wrap around."""
    if ids is None or ids.dim() != 2:
        raise CheckpointError(f"golden file {path}: {short(key)} has no (batch, tokens) "
                              f"input_ids beside it.")
    if positions.is_floating_point() or positions.is_complex() or positions.dtype == torch.bool \
            or positions.dim() != 2 or positions.shape[1] != 2:
        kind = str(positions.dtype).removeprefix("torch.")
        raise CheckpointError(f"golden file {path}: {short(key)} must hold (row, token) integer "
                              f"pairs, shape (P, 2); it has {kind} {list(positions.shape)}.")
    limits = torch.tensor(ids.shape)
    outside = ((positions < 0) | (positions >= limits)).any(dim=1)
    if bool(outside.any()):
        row = positions[int(outside.nonzero()[0])].tolist()
        raise CheckpointError(f"golden file {path}: {short(key)} holds position {row}, outside "
                              f"the input_ids of shape {list(ids.shape)}.")


# --- config and tokenizer --------------------------------------------------------------------


def _config_values(values: dict[str, Any], directory: Path):
    try:
        config = MosaicConfig.from_dict(values, source=f"config file {directory / 'config.json'}")
    except ConfigError as err:
        return None, CheckResult("config values", False, str(err))
    return config, CheckResult(
        "config values", True,
        f"hidden {config.hidden_size} = {config.num_attention_heads} heads x {config.head_dim}, "
        f"{config.num_hidden_layers} layers, intermediate {config.intermediate_size}, "
        f"vocab {config.vocab_size}, {config.describe_variant()}")


def _config_architecture(values, config, found, layout, directory) -> CheckResult:
    kind = "masked-LM (cls.predictions.*)" if layout.masked_lm else \
        "encoder" + (" with pooler" if layout.pooler else " without pooler")
    architectures = values.get("architectures")
    expected = "BertForMaskedLM" if layout.masked_lm else "BertModel"
    if architectures is not None and architectures != [expected]:
        return CheckResult("config architecture", False,
                           f"config.json says {short(architectures)} but the weights have the {kind} "
                           f"layout ({expected})")
    if config is not None:
        try:
            check_family(config, set(found), layout, str(directory))
        except MosaicError as err:
            return CheckResult("config architecture", False, str(err))
    said = f"config.json says {short(architectures)}" if architectures else "config.json names none"
    return CheckResult("config architecture", True, f"{said}; weights have the {kind} "
                                                    f"layout")


def _tokenizer_checks(directory: Path, config: MosaicConfig | None,
                      published: bool) -> tuple[list[CheckResult], Any]:
    """The tokenizer's check row, and the tokenizer (None when it cannot be read)."""
    path = directory / "tokenizer.json"
    try:
        tokenizer = TextTokenizer(path)
    except MosaicError as err:
        return [CheckResult("tokenizer", False, str(err))], None
    ids = {token: tokenizer.token_to_id(token) for token in BERT_SPECIAL_IDS}
    problems = [f"{token} is missing" for token, i in ids.items() if i is None]
    present = {t: i for t, i in ids.items() if i is not None}
    if len(set(present.values())) != len(present):
        problems.append("special tokens share ids")
    vocab_rows = config.vocab_size if config is not None else None
    if vocab_rows is not None:
        problems += [f"{t}={i} is outside the {vocab_rows} embedding rows"
                     for t, i in present.items() if i >= vocab_rows]
        pad = present.get("[PAD]")
        if pad is not None and pad != config.pad_token_id:
            problems.append(f"[PAD]={pad} but config.json's pad_token_id is {config.pad_token_id}")
    if published:
        problems += [f"{t}={present[t]} where bert-base-uncased has {i}"
                     for t, i in BERT_SPECIAL_IDS.items() if t in present and present[t] != i]
    problems += _special_tokens_map(directory, tokenizer)
    if "[CLS]" in present and "[SEP]" in present:
        sample, _, _ = tokenizer.encode_ids(["hello world"])
        if not sample[0] or sample[0][0] != present["[CLS]"] or sample[0][-1] != present["[SEP]"]:
            problems.append("texts are not encoded as [CLS] ... [SEP]")
    detail = " ".join(f"{t}={i}" for t, i in present.items())
    detail = f"{tokenizer.vocab_size} entries; {detail}"
    if problems:
        return [CheckResult("tokenizer", False, f"{'; '.join(problems)} ({detail})")], \
            tokenizer
    return [CheckResult("tokenizer", True, f"{detail}; [CLS] text [SEP]")], tokenizer


def _special_tokens_map(directory: Path, tokenizer) -> list[str]:
    path = directory / "special_tokens_map.json"
    if not (path.exists() or path.is_symlink()):
        return []
    try:
        mapping = read_json(path, "special tokens map", directory)
    except MosaicError as err:
        return [str(err).rstrip(".")]
    problems = []
    for role, token in (mapping.items() if isinstance(mapping, dict) else ()):
        text = token.get("content") if isinstance(token, dict) else token
        if isinstance(text, str) and tokenizer.token_to_id(text) is None:
            problems.append(f"{path.name} names {short(role)} {text!r}, which the tokenizer "
                            f"lacks")
    return problems


def _vocab_rows(values, found, layout, tokenizer) -> CheckResult:
    info = found.get(f"{layout.prefix}embeddings.word_embeddings.weight")
    rows = info.shape[0] if info is not None and info.shape else None
    tokenizer_size = tokenizer.vocab_size if tokenizer is not None else None
    problems = []
    if rows is not None and rows != values.get("vocab_size"):
        problems.append(f"the word embedding has {rows} rows but config.json's vocab_size is "
                        f"{short(values.get('vocab_size'))}")
    if rows is not None and tokenizer_size is not None and rows < tokenizer_size:
        problems.append(f"the tokenizer has {tokenizer_size} entries, more than the {rows} "
                        f"embedding rows")
    elif rows is not None and tokenizer is not None and tokenizer.largest_id >= rows:
        # Ids with gaps: fewer entries than rows, yet an id past the last row.
        problems.append(f"the tokenizer's largest id {tokenizer.largest_id} has no row among the "
                        f"{rows} embedding rows")
    if problems:
        return CheckResult("vocab rows", False, "; ".join(problems))
    size = f"{tokenizer_size} tokenizer entries" if tokenizer_size is not None else \
        "tokenizer unreadable"
    return CheckResult("vocab rows", True, f"{rows} embedding rows >= {size}")


# --- structure -------------------------------------------------------------------------------


def _expected_model(config: MosaicConfig, layout) -> tuple[dict[str, tuple[int, ...]], int]:
    with torch.device("meta"):
        model = build_model(config, layout)
    return expected_tensors(model, layout), sum(p.numel() for p in model.parameters())


def _stored_parameters(found, layout) -> int:
    count = sum(math.prod(info.shape) for info in found.values())
    if layout.masked_lm and TIED_DECODER in found:
        count -= math.prod(found[TIED_DECODER].shape)
    return count


def _name_problems(expected: dict[str, tuple[int, ...]], found, optional: set[str]) -> list[str]:
    missing, stray = missing_and_stray(expected, found, optional)
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing: {summarise_names(missing)}")
    if stray:
        problems.append(f"{len(stray)} stray: {summarise_names(stray)}")
    return problems


def _shape_problems(expected: dict[str, tuple[int, ...]], found, whose: str) -> list[str]:
    return [f"{short(name)} {list(have)} ({whose} {list(want)})"
            for name, want, have in wrong_shapes(expected, found)]


def _structure_checks(config, found, layout) -> list[CheckResult]:
    dtypes = Counter(info.dtype for info in found.values())
    odd = sorted(short(n) for n, info in found.items() if info.dtype not in FLOAT_DTYPES)
    dtype_detail = f"all {next(iter(dtypes))}" if len(dtypes) == 1 else \
        ", ".join(f"{d} x{c}" for d, c in dtypes.most_common())
    dtype_row = CheckResult("tensor dtypes", False,
                            f"{len(odd)} not floating point: {summarise(odd)} ({dtype_detail})") \
        if odd else CheckResult("tensor dtypes", True, dtype_detail)
    geometry = geometry_problems(config, found, layout) if config is not None else []
    if config is None or geometry:
        reason = "cannot build the model: config.json's values are invalid" if config is None \
            else f"config.json contradicts the stored shapes: {summarise(geometry)}"
        return [CheckResult("tensor names", False, reason), CheckResult("tensor shapes", False, reason),
                dtype_row, CheckResult("parameter count", False, reason)]
    expected, parameters = _expected_model(config, layout)
    rows = []
    problems = _name_problems(expected, found, layout.optional)
    rows.append(CheckResult("tensor names", False, "; ".join(problems)) if problems else
                CheckResult("tensor names", True, f"{len(found)} tensors, exactly those the "
                                                   f"config's model needs"))
    shapes = _shape_problems(expected, found, "config")
    rows.append(CheckResult("tensor shapes", False, f"{len(shapes)} differ from the config's "
                                                    f"model: {summarise(shapes, 3)}") if shapes else
                CheckResult("tensor shapes", True, "every shape matches the config's model"))
    rows.append(dtype_row)
    stored = _stored_parameters(found, layout)
    rows.append(CheckResult("parameter count", stored == parameters,
                            f"{stored:,} stored, config's model has {parameters:,}"))
    return rows


def _tied_weights(found, layout) -> CheckResult:
    if not layout.masked_lm:
        return CheckResult("tied weights", True, "none in this layout")
    if TIED_DECODER not in found:
        return CheckResult("tied weights", True, f"{TIED_DECODER} not stored; tied to "
                                                 f"{TIED_SOURCE} at load")
    if TIED_SOURCE not in found:
        return CheckResult("tied weights", False, f"{TIED_SOURCE} is missing")
    decoder, source = (read_tensor(found, n) for n in (TIED_DECODER, TIED_SOURCE))
    if decoder.shape != source.shape or not torch.equal(decoder, source):
        return CheckResult("tied weights", False, f"{TIED_DECODER} differs from "
                                                  f"{TIED_SOURCE}, but they are tied")
    return CheckResult("tied weights", True, f"{TIED_DECODER} equals "
                                             f"{TIED_SOURCE}")


def _manifest_checks(values, found, layout, manifest) -> list[CheckResult]:
    name = short(str(manifest.get("checkpoint", "the manifest")), 200)
    published = {n: t for n, t in manifest["tensors"].items() if isinstance(t, dict)}
    shapes = {n: tuple(t.get("shape", ())) for n, t in published.items()}
    rows = []
    config = manifest.get("config")
    if isinstance(config, dict):
        diffs = [f"{key} {values.get(key)!r} ({name} {config.get(key)!r})" for key in _GEOMETRY
                 if key in config and values.get(key) != config.get(key)]
        rows.append(CheckResult("manifest config", False, f"{len(diffs)} differ: "
                                f"{summarise(diffs)}") if diffs else
                    CheckResult("manifest config", True, "geometry matches"))
    optional = layout.optional
    problems = _name_problems(shapes, found, optional)
    rows.append(CheckResult("manifest names", False, f"against {len(shapes)} published: "
                            f"{'; '.join(problems)}") if problems else
                CheckResult("manifest names", True, f"the {len(shapes)} published tensors"
                            + (" (tied decoder not stored)" if optional - set(found) else "")))
    wrong = _shape_problems(shapes, found, "published")
    common = len(set(shapes) & set(found))
    if not common:
        reason = f"no tensor name in common with {name}"
        return rows + [CheckResult("manifest shapes", False, reason),
                       CheckResult("manifest dtypes", False, reason)] + _manifest_count(
            found, layout, manifest, name)
    rows.append(CheckResult("manifest shapes", False, f"{len(wrong)} of {common} differ: "
                            f"{summarise(wrong, 3)}") if wrong else
                CheckResult("manifest shapes", True, f"all {common} shared tensors match"))
    dtypes = [f"{short(n)} {found[n].dtype} ({name} {short(published[n].get('dtype'))})"
              for n in sorted(set(published) & set(found))
              if published[n].get("dtype") and found[n].dtype != published[n]["dtype"]]
    stored = Counter(published[n].get("dtype") for n in published)
    rows.append(CheckResult("manifest dtypes", False, f"{len(dtypes)} differ: "
                            f"{summarise(dtypes, 3)}") if dtypes else
                CheckResult("manifest dtypes", True, "storage dtypes match ("
                            + ", ".join(str(d) for d in stored) + ")"))
    return rows + _manifest_count(found, layout, manifest, name)


def _manifest_count(found, layout, manifest, name) -> list[CheckResult]:
    count = manifest.get("num_parameters_unique")
    if not isinstance(count, int):
        return []
    mine = _stored_parameters(found, layout)
    return [CheckResult("manifest parameter count", mine == count,
                        f"{mine:,} stored, {name} has {count:,}")]


# --- numeric health --------------------------------------------------------------------------


def _numeric_checks(found) -> list[CheckResult]:
    not_finite, all_zero, zero_biases, implausible, norm_means = [], [], [], [], []
    overflowing: dict[str, list[str]] = {name: [] for name in DTYPES}
    largest = 0.0
    for name, tensor in iter_tensors(found):
        if not tensor.is_floating_point():
            continue
        values = tensor.float()
        finite = bool(torch.isfinite(values).all())
        if not finite:
            not_finite.append(short(name))
        if values.numel() and not bool(values.any()):
            # A zero bias is an initial value (e.g. a pooler never trained), not lost data.
            (zero_biases if name.endswith(".bias") else all_zero).append(short(name))
        if finite and values.numel():
            peak = float(values.abs().max())
            largest = max(largest, peak)
            for dtype_name, dtype in DTYPES.items():
                if peak > torch.finfo(dtype).max:
                    overflowing[dtype_name].append(short(name))
        if _LAYERNORM.search(name) and values.numel() and finite:
            mean = float(values.abs().mean())
            norm_means.append(mean)
            if not LAYERNORM_MEAN_ABS[0] <= mean <= LAYERNORM_MEAN_ABS[1]:
                implausible.append(f"{short(name)} (mean |w| {mean:.3g})")
        del values, tensor
    overflow = [f"{len(names)} tensor(s) overflow {dtype_name} (largest |x| {largest:.4g}): "
                f"{summarise(names)}" for dtype_name, names in overflowing.items() if names]
    rows = [CheckResult("finite values", False, f"NaN or inf in {len(not_finite)} tensor(s): "
                        f"{summarise(not_finite)}") if not_finite else
            CheckResult("finite values", False, "; ".join(overflow)) if overflow else
            CheckResult("finite values", True, f"all {len(found)} tensors, in every compute "
                                               f"dtype; largest |x| {largest:.4g}"),
            CheckResult("no all-zero tensors", False, f"{len(all_zero)} all zero: "
                        f"{summarise(all_zero)}") if all_zero else
            CheckResult("no all-zero tensors", True, "none" if not zero_biases else
                        f"none but {len(zero_biases)} bias(es) at their initial zeros: "
                        f"{summarise(zero_biases)}")]
    low, high = LAYERNORM_MEAN_ABS
    if implausible:
        rows.append(CheckResult("LayerNorm weights", False, f"{len(implausible)} outside mean |w| "
                                f"in [{low}, {high}]: {summarise(implausible, 3)}"))
    elif norm_means:
        rows.append(CheckResult("LayerNorm weights", True, f"{len(norm_means)} with mean |w| in "
                                f"[{min(norm_means):.3g}, {max(norm_means):.3g}]"))
    else:
        rows.append(CheckResult("LayerNorm weights", False, "no LayerNorm weight found"))
    return rows


# --- golden equivalence ----------------------------------------------------------------------


@torch.inference_mode()
def _golden_checks(checkpoint: CheckpointDir, golden: Golden, path: Path,
                   device) -> list[CheckResult]:
    try:
        model = load_model(checkpoint, dtype=torch.float32, device=device)
        tokenizer = TextTokenizer(checkpoint.transformer_dir / "tokenizer.json",
                                  checkpoint.pipeline.max_seq_length,
                                  checkpoint.pipeline.do_lower_case) if golden.texts else None
    except MosaicError as err:
        return [CheckResult(f"golden {path.name}", False, f"the model does not load: {err}")]
    cases = sorted({name.rsplit(".", 1)[0] for name in golden.tensors
                    if name.endswith(".input_ids")})
    return [_golden_case(model, checkpoint.pipeline, tokenizer, golden, case,
                         torch.device(device)) for case in cases]


def _tokenization_problems(tokenizer: TextTokenizer, texts: list[str], ids: torch.Tensor,
                           mask: torch.Tensor) -> list[str]:
    """Where the checkpoint's tokenization of ``texts`` (its ``tokenizer.json``,
    ``max_seq_length`` and ``do_lower_case``) differs from the reference ``ids`` (B, S)."""
    if len(texts) != len(ids):
        return [f"{len(texts)} texts for {len(ids)} rows of input_ids"]
    ours, _, _ = tokenizer.encode_ids(texts)
    for row, (mine, reference, real) in enumerate(zip(ours, ids.tolist(), mask.tolist())):
        reference = [token for token, keep in zip(reference, real) if keep]
        if mine != reference:
            first = next((i for i, (a, b) in enumerate(zip(mine, reference)) if a != b),
                         min(len(mine), len(reference)))
            return [f"the checkpoint tokenizes text {row} differently ({len(mine)} tokens, "
                    f"reference {len(reference)}; first difference at token {first}): its "
                    f"tokenizer.json, max_seq_length or do_lower_case is not the reference's"]
    return []


def _golden_case(model, pipeline: Pipeline, tokenizer: TextTokenizer | None, golden: Golden,
                 case: str, device: torch.device) -> CheckResult:
    ids = golden.tensors[f"{case}.input_ids"]
    mask = golden.tensors.get(f"{case}.attention_mask", torch.ones_like(ids))
    try:
        out = model(ids.to(device), mask.to(device))
    except MosaicError as err:
        return CheckResult(f"golden {short(case)}", False, f"the model rejects the inputs: {err}")
    measured, problems = [], []
    if case in golden.texts:
        try:
            problems += _tokenization_problems(tokenizer, golden.texts[case], ids, mask)
        except MosaicError as err:
            problems.append(f"the tokenizer fails on the reference texts: {err}")
        if not problems:
            measured.append(f"tokenization of {len(ids)} texts")

    def compare(field: str, ours: torch.Tensor | None, what: str) -> None:
        reference = golden.tensors[f"{case}.{field}"]
        if ours is None:
            problems.append(f"{field} expected but the checkpoint has no {what}")
        elif ours.shape != reference.shape:
            problems.append(f"{field} has shape {list(ours.shape)}, expected "
                            f"{list(reference.shape)}")
        else:
            error = float((ours.float().cpu() - reference.float()).abs().max()) \
                if reference.numel() else 0.0
            measured.append(f"{field} {error:.1e}")
            if not error <= GOLDEN_MAX_ABS:
                problems.append(f"{field} max |diff| {error:.2e} > {GOLDEN_MAX_ABS:g}")

    if f"{case}.last_hidden_state" in golden.tensors:
        compare("last_hidden_state", out.last_hidden_state, "encoder output")
    if f"{case}.pooler_output" in golden.tensors:
        compare("pooler_output", out.pooler_output, "pooler")
    if f"{case}.logits_at_positions" in golden.tensors:
        positions = golden.tensors.get(f"{case}.logit_positions")
        if positions is None:
            problems.append("logits_at_positions without logit_positions")
        else:
            logits = None if out.logits is None else \
                out.logits[positions[:, 0].to(device), positions[:, 1].to(device)]
            compare("logits_at_positions", logits, "masked-LM head")
    if f"{case}.sentence_embedding" in golden.tensors:
        reference = golden.tensors[f"{case}.sentence_embedding"]
        embedding = pipeline.pooling(out.last_hidden_state.float(), mask.to(device)).cpu()
        if pipeline.normalize:
            embedding = F.normalize(embedding, dim=-1)
        if embedding.shape != reference.shape:
            problems.append(f"sentence_embedding has shape {list(embedding.shape)}, expected "
                            f"{list(reference.shape)}")
        else:
            reference = reference.float()
            cosine = float(F.cosine_similarity(embedding, reference, dim=-1).min())
            measured.append(f"sentence_embedding cos {cosine:.7f}")
            if not cosine >= GOLDEN_MIN_COSINE:
                problems.append(f"sentence_embedding cosine {cosine:.7f} < {GOLDEN_MIN_COSINE}")
            # The cosine cannot see a missing or extra Normalize module; the lengths do.
            norms = embedding.norm(dim=-1), reference.norm(dim=-1)
            drift = float(((norms[0] - norms[1]).abs() / norms[1].clamp(min=1e-12)).max()) \
                if len(reference) else 0.0
            if not drift <= GOLDEN_MAX_ABS:
                problems.append(f"sentence_embedding lengths differ from the reference by up to "
                                f"{drift:.2e} (relative): the checkpoint's Normalize module is "
                                f"not the reference's")
    if not measured and not problems:
        problems.append("no output field to compare")
    detail = "; ".join(problems) if problems else \
        f"{', '.join(measured)} (max |diff| <= {GOLDEN_MAX_ABS:g}, cos >= {GOLDEN_MIN_COSINE})"
    return CheckResult(f"golden {short(case)}", not problems, detail)
