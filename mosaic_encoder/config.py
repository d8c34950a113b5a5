"""Model configuration: one typed, immutable, strict dataclass read from ``config.json``.

Architecture facts, plus two run-time choices that checkpoints do not hold (``attention_impl``
and ``attention_window``). Each design axis is a field whose value names an entry of one
registry, and every structural question is answered by that entry, never by comparing strings
elsewhere:

=========================  ==========================================  ======================
field                      entries                                     registry
=========================  ==========================================  ======================
``position_embedding_type``  alibi, absolute, rope, none               :mod:`.positions`
``feed_forward``           glu, swiglu, gelu                           :mod:`.feed_forward`
``norm_type``              layernorm, rmsnorm                          :mod:`.normalization`
``layer_norm_position``    post, pre                                   :mod:`.residual`
``attention_impl``         auto, sdpa, triton (run time)               :mod:`.attention`
=========================  ==========================================  ======================

A position scheme owns its options: ``alibi_learned_slopes`` (alibi) and ``rope_theta`` (rope).

Reading is strict (:meth:`MosaicConfig.from_dict`):

- every key is a field, or one of :data:`IGNORED_KEYS`, the keys of published configs this
  package knowingly ignores, each listed once with the reason (and, where a value would change
  the computation, the only values accepted). Any other key is an error naming it and the
  closest known field, so a typo (``feed_foward``) cannot silently build another model;
- an explicit field is never replaced, and a contradiction is an error: an option of another
  position scheme, a ``hidden_act`` that is not the feed-forward's activation, upstream's ALiBi
  keys beside another position type, an absolute ``model_type`` other than BERT's;
- a field a config leaves out takes its default, the MosaicBERT family (alibi, glu, layernorm,
  post), as the dataclass does, except in the two published dialects recognised by their own
  keys (:func:`published_dialect`):

  * upstream MosaicBERT (``alibi_starting_size``, or ``auto_map`` naming ``bert_layers``; e.g.
    lodestone): the MosaicBERT family, its ``position_embedding_type: "absolute"`` being a
    leftover of upstream's code that does not describe the model;
  * Hugging Face BERT (``model_type: "bert"``, no ``position_embedding_type`` or
    ``"absolute"``, and none of this package's own variant fields, e.g. all-MiniLM-L6-v2): the
    classic design, absolute positions and the GELU feed-forward.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .attention_names import ATTENTION_IMPLS
from .errors import ConfigError
from .feed_forward import FEED_FORWARDS, FeedForward
from .files import json_object, read_json, short
from .normalization import NORMS
from .positions import POSITION_SCHEMES, PositionScheme
from .residual import PLACEMENTS

RUNTIME_FIELDS = ("attention_impl", "attention_window")  # chosen per run, never stored
# Field -> registry of the design axes.
AXES: dict[str, dict[str, type]] = {
    "position_embedding_type": POSITION_SCHEMES,
    "feed_forward": FEED_FORWARDS,
    "norm_type": NORMS,
    "layer_norm_position": PLACEMENTS,
}

# The design of classic BERT (Hugging Face's BertModel), as MosaicConfig.variant() gives it.
CLASSIC_BERT = {"position_embedding_type": "absolute", "feed_forward": "gelu",
                "norm_type": "layernorm", "layer_norm_position": "post"}

_ANY = None  # every value accepted
# Keys of published config.json files that do not describe the computation here: key -> (the
# reason, the values accepted or _ANY). A listed value changing the computation is refused.
IGNORED_KEYS: dict[str, tuple[str, tuple | None]] = {
    **dict.fromkeys(("_name_or_path", "_commit_hash", "transformers_version"),
                    ("provenance of the file", _ANY)),
    "architectures": ("the model class follows from the stored tensor names", _ANY),
    "auto_map": ("upstream's remote code is never run", _ANY),
    "alibi_starting_size": ("upstream's bias-table size; ALiBi is computed for any length",
                            _ANY),
    "seq_length": ("upstream's training length; the position scheme bounds inputs",
                   _ANY),
    "model_type": ("only BERT-family encoders are built", ("bert",)),
    **dict.fromkeys(("torch_dtype", "dtype", "use_bfloat16"),
                    ("weights are cast to the dtype asked for when loading", _ANY)),
    "initializer_range": ("read by `init` only, as the standard deviation of the initial "
                          "weights; a loaded model has its own", _ANY),
    "gradient_checkpointing": ("a training option (train --gradient-checkpointing)", _ANY),
    **dict.fromkeys(("use_cache", "output_past"), ("a decoder's generation cache", _ANY)),
    **dict.fromkeys(("classifier_dropout", "id2label", "label2id", "num_labels", "problem_type",
                     "finetuning_task"), ("no classification head is built", _ANY)),
    **dict.fromkeys(("tokenizer_class", "bos_token_id", "eos_token_id", "sep_token_id",
                     "cls_token_id", "mask_token_id", "decoder_start_token_id", "prefix"),
                    ("the tokenizer is tokenizer.json's", _ANY)),
    **dict.fromkeys(("output_attentions", "output_hidden_states", "return_dict", "torchscript",
                     "chunk_size_feed_forward", "tf_legacy_loss", "_attn_implementation"),
                    ("transformers' output and execution options, not the model's values",
                     _ANY)),
    **dict.fromkeys(("max_length", "min_length", "do_sample", "early_stopping", "num_beams",
                     "num_beam_groups", "diversity_penalty", "temperature", "top_k", "top_p",
                     "typical_p", "repetition_penalty", "length_penalty", "no_repeat_ngram_size",
                     "encoder_no_repeat_ngram_size", "bad_words_ids", "num_return_sequences",
                     "output_scores", "return_dict_in_generate", "forced_bos_token_id",
                     "forced_eos_token_id", "remove_invalid_values",
                     "exponential_decay_length_penalty", "suppress_tokens",
                     "begin_suppress_tokens", "task_specific_params"),
                    ("text generation settings; an encoder generates nothing", _ANY)),
    **dict.fromkeys(("is_decoder", "is_encoder_decoder", "add_cross_attention",
                     "tie_encoder_decoder"),
                    ("this package builds bidirectional encoders only", (False,))),
    "cross_attention_hidden_size": ("this package builds encoders without cross-attention",
                                    (None,)),
    "pruned_heads": ("every head is built", ({},)),
    "tie_word_embeddings": ("the masked-LM decoder is always tied to the word embeddings",
                            (True,)),
    "hidden_act": ("the feed-forward's activation follows from feed_forward", _ANY),
}


@dataclass(frozen=True)
class MosaicConfig:
    """Geometry of a MosaicBERT-family encoder, its design variant, and how its attention runs.

    The variant fields name registry entries (see the module docstring): ``position_embedding_type``
    (``"alibi"``, ``"absolute"``: at most ``max_position_embeddings`` tokens, ``"rope"``,
    ``"none"``), ``feed_forward`` (``"glu"``, ``"swiglu"``, ``"gelu"``), ``norm_type``
    (``"layernorm"``, ``"rmsnorm"``), ``layer_norm_position`` (``"post"``, ``"pre"``);
    ``alibi_learned_slopes`` (alibi only) makes the slopes a parameter, ``rope_theta`` (rope only)
    is the rotary base. ``attention_impl`` is a run-time choice, not part of the checkpoint:
    ``"sdpa"`` (plain PyTorch), ``"triton"`` (the kernels package) or ``"auto"`` (Triton on CUDA
    tensors, PyTorch elsewhere). ``attention_window``, also run-time: skip the keys whose ALiBi
    attention weight is provably exactly zero (same results within float32 rounding; False
    computes every score, e.g. to compare).
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
    alibi_learned_slopes: bool = False
    rope_theta: float = 10000.0
    feed_forward: str = "glu"
    norm_type: str = "layernorm"
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
        for name in ("layer_norm_eps", "rope_theta"):
            value = getattr(self, name)
            if not _is_number(value) or not 0 < value < math.inf:
                raise ConfigError(f"config field {name!r} must be a positive finite number, got "
                                  f"{short(value, quote=True)}.")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            value = getattr(self, name)
            if not _is_number(value) or not 0 <= value < 1:
                raise ConfigError(f"config field {name!r} must be a number in [0, 1), got "
                                  f"{short(value, quote=True)}.")
        for name, registry in AXES.items():
            value = getattr(self, name)
            if not isinstance(value, str) or value not in registry:
                raise ConfigError(f"config field {name!r} must be one of "
                                  f"{', '.join(map(repr, registry))}, got "
                                  f"{short(value, quote=True)}.")
        for name in ("alibi_learned_slopes", "attention_window"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"config field {name!r} must be true or false, got "
                                  f"{short(getattr(self, name), quote=True)}.")
        if self.attention_impl not in ATTENTION_IMPLS:
            raise ConfigError(f"attention implementation must be one of {ATTENTION_IMPLS}, got "
                              f"{short(self.attention_impl, quote=True)}.")
        foreign = [name for name in scheme_options() if name not in self.position_scheme.options
                   and getattr(self, name) != _default(name)]
        if foreign:
            raise ConfigError(_foreign_option_message(foreign[0], self.position_embedding_type))
        problem = self.position_scheme.config_problem(self)
        if problem:
            raise ConfigError(f"config field 'position_embedding_type' is "
                              f"{self.position_embedding_type!r}, but {problem}.")

    # --- what the registries say --------------------------------------------------------------

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def position_scheme(self) -> type[PositionScheme]:
        return POSITION_SCHEMES[self.position_embedding_type]

    @property
    def feed_forward_class(self) -> type[FeedForward]:
        return FEED_FORWARDS[self.feed_forward]

    @property
    def placement(self):
        """The ``layer_norm_position`` entry (:class:`~.residual.PostNorm` or ``PreNorm``)."""
        return PLACEMENTS[self.layer_norm_position]

    @property
    def longest_input(self) -> int | None:
        """Most tokens a sequence may have (None: any number), as the position scheme says."""
        return self.position_scheme.longest_input(self)

    @property
    def input_limit(self) -> str:
        """The bound on input lengths in words, for messages: ``"max_position_embeddings
        (512)"``, or ``"none"``."""
        longest = self.longest_input
        if longest is None:
            return "none"
        field = self.position_scheme.limit_field
        return f"{field} ({longest})" if field else f"{longest} tokens"

    def variant(self) -> dict[str, Any]:
        """The design fields (the axes and the position scheme's options), by name."""
        return {name: getattr(self, name)
                for name in (*AXES, *self.position_scheme.options)}

    def describe_variant(self) -> str:
        """The design in words, e.g. ``"alibi positions, glu feed-forward, layernorm post"``;
        a scheme's option appears when it is not the default
        (``"rope positions (rope_theta=500.0), ..."``)."""
        options = ", ".join(f"{name}={getattr(self, name)}" for name in self.position_scheme.options
                            if getattr(self, name) != _default(name))
        return (f"{self.position_embedding_type} positions{f' ({options})' if options else ''}, "
                f"{self.feed_forward} feed-forward, {self.norm_type} {self.layer_norm_position}")

    # --- reading and writing -----------------------------------------------------------------

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> MosaicConfig:
        """Build from a ``config.json`` mapping, strictly (see the module docstring).

        Raises:
            ConfigError: one sentence naming ``source`` and the key or field at fault.
        """
        if not isinstance(values, dict):
            raise ConfigError(f"{source} must hold a JSON object, got {type(values).__name__}.")
        fields = [f.name for f in dataclasses.fields(cls)]
        chosen_per_run = [key for key in RUNTIME_FIELDS if key in values]
        if chosen_per_run:
            raise ConfigError(f"{source}: {chosen_per_run[0]} is chosen per run (load_model's "
                              f"attention arguments, --attention), not stored in a config; "
                              f"remove it.")
        unknown = [key for key in values if key not in fields and key not in IGNORED_KEYS]
        if unknown:
            raise ConfigError(f"{source}: unknown field {short(unknown[0], quote=True)}"
                              f"{_closest(unknown[0], fields)}; the known keys are this package's "
                              f"fields (MosaicConfig) and those it ignores "
                              f"(mosaic_encoder.config.IGNORED_KEYS).")
        for key, (reason, accepted) in IGNORED_KEYS.items():
            if key in values and accepted is not _ANY and values[key] not in accepted:
                raise ConfigError(f"{source}: {key} is {short(values[key], quote=True)}, which "
                                  f"this package cannot honour ({reason}); remove it or set it "
                                  f"to {short(accepted[0], quote=True)}.")
        missing = cls.missing_fields(values)
        if missing:
            raise ConfigError(f"{source} is missing the field(s) {', '.join(missing)}.")
        stated = {name: values[name] for name in fields if name in values}
        stated.update(published_dialect(values, source))
        try:
            config = cls(**stated)
        except ConfigError as err:
            raise ConfigError(f"{source}: {err}") from None
        foreign = [name for name in scheme_options()
                   if name in values and name not in config.position_scheme.options]
        if foreign:
            raise ConfigError(f"{source}: "
                              f"{_foreign_option_message(foreign[0], config.position_embedding_type)}")
        activation = values.get("hidden_act")
        if activation is not None and activation not in config.feed_forward_class.hidden_act:
            names = config.feed_forward_class.hidden_act
            raise ConfigError(f"{source}: hidden_act {short(activation, quote=True)} is not the "
                              f"activation of feed_forward {config.feed_forward!r} "
                              f"({' or '.join(map(repr, names))}); choose the feed-forward with "
                              f"feed_forward, and remove hidden_act or make it agree.")
        return config

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
        """The fields that describe the network, as a ``config.json`` states them: every field
        but the run-time choices and other position schemes' options. :meth:`from_dict` reads
        them back unchanged."""
        others = set(scheme_options()) - set(self.position_scheme.options)
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name not in RUNTIME_FIELDS and f.name not in others}


def read_config_values(path: str | Path) -> dict[str, Any]:
    """The JSON object in a ``config.json``; a missing, unreadable or non-object file (or a FIFO,
    deep nesting, a number too long to read) is a :class:`ConfigError` naming it."""
    return json_object(read_json(path, "config file", error=ConfigError), "config file", path,
                       ConfigError)


def is_upstream_mosaic(values: dict[str, Any]) -> bool:
    """Whether a config.json mapping comes from upstream MosaicBERT code."""
    auto_map = values.get("auto_map")
    return "alibi_starting_size" in values or (
        isinstance(auto_map, dict) and any("bert_layers" in str(v) for v in auto_map.values()))


def published_dialect(values: dict[str, Any], source: str) -> dict[str, str]:
    """The variant fields a published config implies without stating them in this package's
    terms (see the module docstring); {} for this package's own configs and any other.

    A config stating any variant field but ``position_embedding_type`` (which Hugging Face's
    BERT configs state too, as ``"absolute"``) is in this package's own terms.

    Raises:
        ConfigError: upstream's ALiBi keys beside a position type other than alibi (or beside
            ``"absolute"`` in a config that states this package's own fields).
    """
    own = any(key in values for key in (*AXES, *scheme_options())
              if key != "position_embedding_type")
    stated = values.get("position_embedding_type")
    if is_upstream_mosaic(values):
        if stated not in (None, "alibi") and not (stated == "absolute" and not own):
            raise ConfigError(f"{source} has upstream's ALiBi keys (alibi_starting_size or "
                              f"auto_map) but 'position_embedding_type': "
                              f"{short(stated, quote=True)}; remove one of them.")
        return {"position_embedding_type": "alibi"}
    classic = CLASSIC_BERT["position_embedding_type"]
    if not own and values.get("model_type") == "bert" and stated in (None, classic):
        return {"position_embedding_type": classic,
                "feed_forward": CLASSIC_BERT["feed_forward"]}
    return {}


def scheme_options() -> list[str]:
    """Every position scheme's option fields."""
    return [name for scheme in POSITION_SCHEMES.values() for name in scheme.options]


def _foreign_option_message(name: str, scheme: str) -> str:
    owner = next(key for key, entry in POSITION_SCHEMES.items() if name in entry.options)
    return (f"config field {name!r} belongs to position_embedding_type {owner!r}, but the "
            f"config chooses {scheme!r}; remove it or change the position type.")


def _default(name: str) -> Any:
    return next(f.default for f in dataclasses.fields(MosaicConfig) if f.name == name)


def _closest(key: str, fields: list[str]) -> str:
    """' (did you mean 'x'?)' for the known key closest to ``key``, or ''."""
    if not isinstance(key, str):
        return ""
    match = difflib.get_close_matches(key, [*fields, *IGNORED_KEYS], n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
