"""Sentence embeddings from a sentence-transformers checkpoint directory.

The directory's layout (``modules.json``: Transformer, Pooling, optional Normalize;
``1_Pooling/config.json``; ``sentence_bert_config.json``) is read by
:class:`~mosaic_encoder.checkpoint.CheckpointDir` as sentence-transformers reads it; texts are
tokenized with the directory's ``tokenizer.json``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .api_arguments import flag_arg, int_arg, optional_int_arg, optional_text_arg, text_list
from .batching import length_sorted_batches
from .checkpoint import CheckpointDir
from .errors import ArgumentError, CheckpointError, ConfigError, InputError
from .loading import load_model
from .models import MosaicBertForMaskedLM
from .regions import CompiledRegions
from .tokenizer import TextTokenizer, collate


class SentenceEncoder:
    """Encode texts into sentence embeddings with a MosaicBERT checkpoint.

    Args:
        path: sentence-transformers directory (or a bare checkpoint: mean pooling), or a Hugging
            Face Hub id ``"org/name"``, as for :func:`mosaic_encoder.load_model`.
        dtype, device, attention, revision: as for :func:`mosaic_encoder.load_model`.
        max_seq_length: overrides ``sentence_bert_config.json``; longer inputs are truncated.
        compile: compile the model by regions (:class:`~mosaic_encoder.regions.CompiledRegions`:
            each layer's token-wise work through ``torch.compile``, attention eager, only what
            pays compiled); a string names the ``torch.compile`` backend (True: inductor). The
            first batch compiles (``first_batch_seconds`` says how long it took); later batches
            of any size reuse it.
    """

    def __init__(self, path: str | Path, dtype: torch.dtype = torch.float32,
                 device: torch.device | str = "cpu", attention: str = "auto",
                 max_seq_length: int | None = None, compile: bool | str = False,
                 revision: str | None = None):
        checkpoint = CheckpointDir.open(path, revision)
        self.pipeline = checkpoint.pipeline
        model = load_model(checkpoint, dtype=dtype, device=device, attention=attention)
        self.model = model.bert if isinstance(model, MosaicBertForMaskedLM) else model
        config = self.model.config
        if max_seq_length is not None and (isinstance(max_seq_length, bool) or
                                           not isinstance(max_seq_length, int) or max_seq_length < 2):
            raise InputError(f"max_seq_length must be an integer of at least 2 (room for [CLS] "
                             f"and [SEP]), got {max_seq_length!r}.")
        self.max_seq_length = max_seq_length if max_seq_length is not None \
            else self.pipeline.max_seq_length
        limit = config.longest_input
        if limit is not None:
            # The position scheme bounds the input (a learned table): longer ones cannot run.
            if self.max_seq_length is not None and self.max_seq_length > limit:
                raise ConfigError(f"max_seq_length {self.max_seq_length} exceeds the checkpoint's "
                                  f"{config.input_limit}.")
            self.max_seq_length = self.max_seq_length or limit
        self.tokenizer = TextTokenizer(self.pipeline.transformer_dir / "tokenizer.json",
                                       self.max_seq_length, self.pipeline.do_lower_case)
        self.device = torch.device(device)
        self.last_truncated = 0
        self.compiled = None if compile is False else CompiledRegions(
            self.model, backend="inductor" if compile is True else compile)
        self.first_batch_seconds: float | None = None

    @property
    def embedding_dim(self) -> int:
        return self.model.config.hidden_size * len(self.pipeline.pooling.modes)

    def get_sentence_embedding_dimension(self) -> int:
        """D, the length of each embedding (sentence-transformers' name for it)."""
        return self.embedding_dim

    @staticmethod
    def similarity(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Cosine similarities of embeddings a (N, D) and b (M, D) (or single (D,) ones):
        float32 (N, M), as sentence-transformers' default ``similarity``."""
        a, b = (_embedding_rows(x, name) for x, name in ((a, "a"), (b, "b")))
        if a.shape[1] != b.shape[1]:
            raise InputError(f"similarity needs embeddings of one length, got {a.shape[1]} and "
                             f"{b.shape[1]}.")
        return F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T

    @torch.inference_mode()
    def encode(self, sentences: str | list[str], batch_size: int = 32,
               normalize_embeddings: bool = True, convert_to_numpy: bool = True,
               show_progress_bar: bool | None = None,
               max_tokens_per_batch: int | None = None, prompt: str | None = None,
               prompt_name: str | None = None, convert_to_tensor: bool = False, output_value: str | None = "sentence_embedding",
               precision: str = "float32", **unsupported) -> np.ndarray | torch.Tensor:
        """Embed texts; float32 (N, D) in input order, or (D,) for a single string.

        Texts are sorted by token count and batched (at most ``batch_size`` texts and, when
        given, ``max_tokens_per_batch`` padded tokens per batch), then put back in input order.
        ``last_truncated`` afterwards counts the inputs cut at ``max_seq_length``.

        The keyword arguments follow sentence-transformers' ``encode`` where they mean the same
        here: ``prompt`` is prepended to every text; ``prompt_name`` picks one of the prompts in
        the checkpoint's ``config_sentence_transformers.json`` (whose ``default_prompt_name``, when
        set, applies without either argument); ``convert_to_tensor`` (or
        ``convert_to_numpy=False``) returns a torch tensor. ``normalize_embeddings`` defaults
        to True, unlike sentence-transformers' False: lodestone's ``modules.json`` ends in a
        ``Normalize`` module, which normalises whatever the argument says, so both give unit
        vectors on it; on a checkpoint without that module (a bare or masked-LM one), pass
        False to get sentence-transformers' raw pooled vectors. Arguments this encoder does not
        implement (``device``, ``precision`` other than float32,
        ``output_value`` other than sentence_embedding, ...) raise :class:`InputError` naming
        the alternative; :func:`mosaic_encoder.to_sentence_transformer` gives the full
        sentence-transformers ``encode``.
        """
        _check_encode_options(output_value, precision, unsupported)
        single = isinstance(sentences, str)
        texts = [sentences] if single else text_list(sentences, "sentences")
        batch_size = int_arg(batch_size, "batch_size")
        max_tokens_per_batch = optional_int_arg(max_tokens_per_batch, "max_tokens_per_batch")
        prompt = self.pipeline.prompt(optional_text_arg(prompt, "prompt"),
                                      optional_text_arg(prompt_name, "prompt_name"))
        normalize_embeddings, convert_to_numpy, convert_to_tensor = (
            flag_arg(value, name) for value, name in (
                (normalize_embeddings, "normalize_embeddings"),
                (convert_to_numpy, "convert_to_numpy"), (convert_to_tensor, "convert_to_tensor")))
        if show_progress_bar is not None:
            show_progress_bar = flag_arg(show_progress_bar, "show_progress_bar")
        if prompt and not self.pipeline.pooling.include_prompt:
            raise InputError("this checkpoint's pooling leaves the prompt's tokens out "
                             "(include_prompt false), which SentenceEncoder does not implement; "
                             "use mosaic_encoder.to_sentence_transformer(path).encode(..., "
                             "prompt=...).")
        if prompt:
            texts = [prompt + t if isinstance(t, str) else t for t in texts]
        ids, types, self.last_truncated = self.tokenizer.encode_ids(texts)
        batches = length_sorted_batches([len(row) for row in ids], batch_size,
                                        max_tokens_per_batch)
        show = sys.stderr.isatty() and len(batches) > 1 if show_progress_bar is None \
            else show_progress_bar
        out = torch.empty((len(texts), self.embedding_dim), dtype=torch.float32)
        for batch in tqdm(batches, desc="encode", unit="batch", disable=not show):
            tokens = collate([ids[i] for i in batch], [types[i] for i in batch],
                             self.tokenizer.pad_token_id)
            mask = tokens.attention_mask.to(self.device)
            hidden = self._forward(tokens.input_ids.to(self.device), mask,
                                   tokens.token_type_ids.to(self.device))
            embedding = self.pipeline.pooling(hidden.float(), mask)
            if self.pipeline.normalize or normalize_embeddings:
                embedding = F.normalize(embedding, p=2, dim=-1)
            out[torch.tensor(batch)] = embedding.cpu()
        if self.pipeline.normalize or normalize_embeddings:
            _check_lengths(out)
        result = out[0] if single else out
        return result.numpy() if convert_to_numpy and not convert_to_tensor else result

    def _forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 token_type_ids: torch.Tensor) -> torch.Tensor:
        """The last hidden state (B, S, H), through the compiled model when there is one."""
        if self.compiled is None:
            return self.model(input_ids, attention_mask, token_type_ids).last_hidden_state
        start = time.perf_counter()
        hidden = self.compiled(input_ids, attention_mask, token_type_ids).last_hidden_state
        if self.first_batch_seconds is None:
            self.first_batch_seconds = time.perf_counter() - start
        return hidden


def _check_lengths(embeddings: torch.Tensor) -> None:
    """Refuse normalised (N, D) embeddings that are not unit vectors: a pooled output shorter than
    ``F.normalize``'s 1e-12 stays (nearly) zero, which only all-zero or vanishing weights give.
    Non-finite rows are left to the caller's finiteness check."""
    short = embeddings.norm(dim=-1) < 0.5  # NaN compares False
    if bool(short.any()):
        raise CheckpointError(f"{int(short.sum())} of {len(embeddings)} embeddings are zero vectors "
                              f"(the first is row {int(short.nonzero()[0])}): the model's pooled "
                              f"output has no length to normalise, so its weights are all-zero or "
                              f"vanishing (mosaic-encoder verify checks them).")


def _embedding_rows(value: object, name: str) -> torch.Tensor:
    """An array or tensor of one (D,) or several (N, D) embeddings as float32 (N, D)."""
    if not isinstance(value, (np.ndarray, torch.Tensor)):
        raise ArgumentError(f"similarity needs embeddings as a numpy array or torch tensor, got "
                            f"{type(value).__name__} for {name}.")
    if value.ndim not in (1, 2) or value.shape[-1] == 0:
        raise InputError(f"similarity needs embeddings of shape (D,) or (N, D), got "
                         f"{tuple(value.shape)} for {name}.")
    try:
        rows = torch.as_tensor(value, dtype=torch.float32)
    except (TypeError, ValueError, RuntimeError):
        raise ArgumentError(f"similarity needs numeric embeddings, got dtype {value.dtype} for "
                            f"{name}.") from None
    return rows.unsqueeze(0) if rows.dim() == 1 else rows


# sentence-transformers encode() arguments without an equivalent here, and what to do instead.
_ALTERNATIVES = {
    "device": "pass device= to SentenceEncoder(...), which loads the model there",
    "truncate_dim": "slice the returned embeddings ([:, :dim]) and renormalise them",
    "pool": "start one SentenceEncoder per device",
    "chunk_size": "use batch_size or max_tokens_per_batch",
}


def _check_encode_options(output_value: str | None, precision: str,
                          unsupported: dict[str, object]) -> None:
    full = "or use mosaic_encoder.to_sentence_transformer(path) for sentence-transformers' encode"
    if output_value != "sentence_embedding":
        raise InputError(f"output_value={output_value!r} is not supported: SentenceEncoder returns "
                         f"sentence embeddings; for token embeddings call the model from "
                         f"mosaic_encoder.load_model, {full}.")
    if precision != "float32":
        raise InputError(f"precision={precision!r} is not supported: SentenceEncoder returns "
                         f"float32; quantize with sentence_transformers.quantize_embeddings, "
                         f"{full}.")
    for name in unsupported:
        hint = _ALTERNATIVES.get(name, "leave it out")
        raise InputError(f"encode() has no argument {name!r}: {hint}, {full}.")

