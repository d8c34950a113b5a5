"""Model configuration: one typed, immutable dataclass read from a checkpoint's ``config.json``.

Architecture facts, plus two run-time choices that published checkpoints do not hold
(``attention_impl`` and ``attention_window``, below). Keys of ``config.json`` that do not change
the computation (``auto_map``, ``alibi_starting_size``, ``torch_dtype``, ``hidden_act``, ...) are
ignored: upstream's remote code is never used, the ALiBi bias is computed for any length on demand,
and the GELU is always the exact erf form, whatever ``hidden_act`` says, as upstream's
``bert_layers.py`` computes it (see :class:`mosaic_encoder.layers.GatedMLP`; the reference
outputs in ``tests/data/expected/`` come from that code).

The variant axes are the fields ``position_embedding_type`` (alibi | absolute), ``feed_forward``
(glu | gelu) and ``layer_norm_position`` (post | pre). A config written by this package states all
three, and what it states is what is built. Configs written elsewhere leave ``feed_forward`` out,
and their family is read from upstream's keys:

- MosaicBERT (ALiBi, GLU) is recognised by ``alibi_starting_size``, or ``auto_map`` naming
  ``bert_layers``; its ``position_embedding_type: "absolute"`` is a leftover that does not
  describe the model.
- Any other BERT config is the classic design: learned absolute positions, GELU feed-forward.

An explicit ``feed_forward`` is never replaced. Beside it, upstream's ALiBi keys and
``position_embedding_type: "absolute"`` contradict each other, which is an error.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .files import json_object, read_json, short

ATTENTION_IMPLS = ("auto", "sdpa", "triton")
RUNTIME_FIELDS = ("attention_impl", "attention_window")  # chosen per run, never stored


@dataclass(frozen=True)
class MosaicConfig:
    """Geometry of a MosaicBERT-family encoder, and how its attention runs.

    ``position_embedding_type`` is ``"alibi"`` (no position embeddings, ALiBi bias in attention)
    or ``"absolute"`` (learned position embeddings, at most ``max_position_embeddings`` tokens);
    ``feed_forward`` is ``"glu"`` (``mlp.gated_layers``) or ``"gelu"`` (classic ``intermediate`` /
    ``output``); ``layer_norm_position`` is ``"post"`` (``LayerNorm(x + sublayer(x))``, BERT and
    MosaicBERT) or ``"pre"`` (``x + sublayer(LayerNorm(x))``, plus a final LayerNorm after the
    last layer). ``attention_impl`` is a run-time choice, not part of
    the checkpoint: ``"sdpa"`` (plain PyTorch), ``"triton"`` (the kernels package) or ``"auto"``
    (Triton on CUDA tensors, PyTorch elsewhere). ``attention_window``, also run-time: skip the
    keys whose ALiBi attention weight is provably exactly zero (same results within float32
    rounding; False computes every score, e.g. to compare).
    """

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.0
    max_position_embeddings: int = 512
    position_embedding_type: str = "alibi"
    feed_forward: str = "glu"
    layer_norm_position: str = "post"
    attention_impl: str = "auto"
    attention_window: bool = True

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "intermediate_size", "type_vocab_size", "max_position_embeddings"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"config field {name!r} must be a positive integer, got "
                                  f"{short(value, quote=True)}.")
        if isinstance(self.pad_token_id, bool) or not isinstance(self.pad_token_id, int) or not (
                0 <= self.pad_token_id < self.vocab_size):
            raise ConfigError(f"config field 'pad_token_id' must be an integer in [0, vocab_size), "
                              f"got {short(self.pad_token_id, quote=True)}.")
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(f"config field 'hidden_size' ({short(self.hidden_size)}) is not "
                              f"divisible by 'num_attention_heads' "
                              f"({short(self.num_attention_heads)}).")
        if not isinstance(self.layer_norm_eps, (int, float)) or isinstance(self.layer_norm_eps, bool) \
                or not 0 < self.layer_norm_eps < math.inf:
            raise ConfigError(f"config field 'layer_norm_eps' must be a positive finite number, got "
                              f"{short(self.layer_norm_eps, quote=True)}.")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value < 1:
                raise ConfigError(f"config field {name!r} must be a number in [0, 1), got "
                                  f"{short(value, quote=True)}.")
        if self.position_embedding_type not in ("alibi", "absolute"):
            raise ConfigError(f"config field 'position_embedding_type' must be 'alibi' or "
                              f"'absolute', got {short(self.position_embedding_type, quote=True)}.")
        if self.feed_forward not in ("glu", "gelu"):
            raise ConfigError(f"config field 'feed_forward' must be 'glu' or 'gelu', got "
                              f"{short(self.feed_forward, quote=True)}.")
        if self.layer_norm_position not in ("post", "pre"):
            raise ConfigError(f"config field 'layer_norm_position' must be 'post' or 'pre', got "
                              f"{short(self.layer_norm_position, quote=True)}.")
        if not isinstance(self.attention_window, bool):
            raise ConfigError(f"config field 'attention_window' must be a bool, got "
                              f"{short(self.attention_window, quote=True)}.")
        if self.attention_impl not in ATTENTION_IMPLS:
            raise ConfigError(f"attention implementation must be one of {ATTENTION_IMPLS}, got "
                              f"{self.attention_impl!r}.")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def uses_alibi(self) -> bool:
        return self.position_embedding_type == "alibi"

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> MosaicConfig:
        """Build from a ``config.json`` mapping; unknown keys are ignored, required ones named."""
        if not isinstance(values, dict):
            raise ConfigError(f"{source} must hold a JSON object, got {type(values).__name__}.")
        missing = cls.missing_fields(values)
        if missing:
            raise ConfigError(f"{source} is missing the field(s) {', '.join(missing)}.")
        fields = {f.name for f in dataclasses.fields(cls)}
        known = {n: values[n] for n in fields if n in values}
        known.update(_family(values, source))
        try:
            return cls(**known)
        except ConfigError as err:
            raise ConfigError(f"{source}: {err}") from None

    @classmethod
    def missing_fields(cls, values: dict[str, Any]) -> list[str]:
        """Required fields (those without a default) absent from a config mapping."""
        return [f.name for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.name not in values]

    @classmethod
    def from_json_file(cls, path: str | Path) -> MosaicConfig:
        return cls.from_dict(read_config_values(path), source=f"config file {path}")

    def replace(self, **changes: Any) -> MosaicConfig:
        return dataclasses.replace(self, **changes)

    def architecture_values(self) -> dict[str, Any]:
        """The fields that describe the network (every field but the run-time choices), as a
        ``config.json`` states them: what :meth:`from_dict` reads back unchanged."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name not in RUNTIME_FIELDS}


def read_config_values(path: str | Path) -> dict[str, Any]:
    """The JSON object in a ``config.json``; a missing, unreadable or non-object file (or a FIFO,
    deep nesting, a number too long to read) is a :class:`ConfigError` naming it."""
    return json_object(read_json(path, "config file", error=ConfigError), "config file", path,
                       ConfigError)


def is_mosaic_config(values: dict[str, Any]) -> bool:
    """Whether a config.json mapping comes from upstream MosaicBERT code."""
    auto_map = values.get("auto_map")
    return "alibi_starting_size" in values or (
        isinstance(auto_map, dict) and any("bert_layers" in str(v) for v in auto_map.values()))


def _family(values: dict[str, Any], source: str) -> dict[str, str]:
    """The variant fields a config implies but does not state (see the module docstring)."""
    upstream = is_mosaic_config(values)
    if "feed_forward" not in values:
        if upstream:
            return {"position_embedding_type": "alibi", "feed_forward": "glu"}
        return {"feed_forward": "gelu",
                "position_embedding_type": values.get("position_embedding_type", "absolute")}
    if upstream and values.get("position_embedding_type") == "absolute":
        raise ConfigError(f"{source} has upstream's ALiBi keys (alibi_starting_size or auto_map) "
                          f"but 'position_embedding_type': 'absolute'; remove one of them.")
    if upstream:
        return {"position_embedding_type": "alibi"}
    return {}
