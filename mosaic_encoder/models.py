"""Whole models: the encoder (optionally with pooler) and the masked-LM model.

Both take a padded batch, pack the real tokens once, run every layer on the packed tokens, and
return padded outputs with exact zeros at padded positions.

Under ``torch.compile`` and ``torch.export`` (``torch.compiler.is_compiling()``) they run the
padded rows instead (:class:`~mosaic_encoder.padding.PaddedRows`): the packed token count
depends on the mask's values, which a graph with dynamic shapes cannot follow. The input checks
that read values run only eagerly; the shape and dtype checks run in both.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .config import MosaicConfig
from .errors import ConfigError, InputError
from .layers import Embeddings, Encoder, MaskedLMPredictions, Pooler
from .padding import Packing, PaddedRows, pad, unpad


@dataclass
class EncoderOutput:
    """Model outputs.

    Attributes:
        last_hidden_state: (B, S, H), zeros at padded positions.
        pooler_output: (B, H), only for checkpoints with a pooler.
        logits: (B, S, V), only for masked-LM models; zeros at padded positions.
    """

    last_hidden_state: torch.Tensor
    pooler_output: torch.Tensor | None = None
    logits: torch.Tensor | None = None


# torch.export flattens a program's outputs: it must know the fields of this one.
torch.export.register_dataclass(EncoderOutput)

_INDEX_DTYPES = (torch.int64, torch.int32)  # what nn.Embedding accepts as indices


def _check_inputs(input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                  token_type_ids: torch.Tensor | None,
                  config: MosaicConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate a padded batch; returns the attention mask and token type ids, defaults filled in.

    Ids must be int64 or int32 (a uint8 id of 300 would silently wrap to 44, a float id would be
    truncated); the mask may be of any dtype but must hold exactly 0 and 1 (:meth:`Packing.from_mask`
    checks the values). A batch of zero rows or of zero columns is valid. The value checks are
    skipped while compiling: they would read tensors on the host, which breaks the graph.
    """
    for name, tensor in (("input_ids", input_ids), ("attention_mask", attention_mask),
                         ("token_type_ids", token_type_ids)):
        if tensor is not None and not isinstance(tensor, torch.Tensor):
            raise InputError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}.")
    if input_ids.dim() != 2:
        raise InputError(f"input_ids must have shape (batch, seqlen), got {tuple(input_ids.shape)}.")
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    if token_type_ids is None:
        token_type_ids = torch.zeros_like(input_ids)
    for name, tensor in (("input_ids", input_ids), ("token_type_ids", token_type_ids)):
        if tensor.dtype not in _INDEX_DTYPES:
            raise InputError(f"{name} must be an int64 or int32 tensor, got {tensor.dtype}.")
    for name, tensor in (("attention_mask", attention_mask), ("token_type_ids", token_type_ids)):
        if tensor.shape != input_ids.shape:
            raise InputError(f"{name} has shape {tuple(tensor.shape)} but input_ids has "
                             f"{tuple(input_ids.shape)}.")
    if input_ids.numel() and not torch.compiler.is_compiling():
        if int(input_ids.min()) < 0 or int(input_ids.max()) >= config.vocab_size:
            raise InputError(f"input_ids must lie in [0, {config.vocab_size}), got values in "
                             f"[{int(input_ids.min())}, {int(input_ids.max())}].")
        if int(token_type_ids.min()) < 0 or int(token_type_ids.max()) >= config.type_vocab_size:
            raise InputError(f"token_type_ids must lie in [0, {config.type_vocab_size}).")
    return attention_mask, token_type_ids


class MosaicBertModel(nn.Module):
    """MosaicBERT encoder: embeddings, the position scheme, the layers, and a pooler.

    The config's design fields choose each part from its registry (:mod:`.config`): with
    MosaicBERT's (ALiBi, GLU, post-LN) this is upstream's model, with classic BERT's (absolute
    positions, GELU feed-forward) BERT's.
    """

    def __init__(self, config: MosaicConfig, add_pooler: bool = True):
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.positions = config.position_scheme(config)
        self.encoder = Encoder(config)
        self.pooler = Pooler(config) if add_pooler else None

    def encode_packed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                      token_type_ids: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, Packing | PaddedRows]:
        """Run the encoder; returns the last hidden states (T, H) and their packing.

        Eagerly a :class:`Packing` of the real tokens; while compiling :class:`PaddedRows`, whose
        T = B x S tokens include the padding (:func:`mosaic_encoder.padding.pad` zeroes it).
        """
        attention_mask, token_type_ids = _check_inputs(input_ids, attention_mask, token_type_ids,
                                                       self.config)
        config = self.config
        if torch.jit.is_tracing():
            raise ConfigError("the TorchScript tracer would record this batch's padding as "
                              "constants, giving a graph that is wrong for any other mask; "
                              "export with torch.export, torch.onnx.export(..., dynamo=True) or "
                              "mosaic-encoder export-onnx.")
        packing = PaddedRows.from_mask(attention_mask) if torch.compiler.is_compiling() \
            else Packing.from_mask(attention_mask)
        # Compiled, the bound applies to the padded length, the only length known there.
        longest = config.longest_input
        if longest is not None and packing.max_seqlen > longest:
            raise InputError(f"a sequence of {packing.max_seqlen} tokens exceeds this checkpoint's "
                             f"{config.input_limit}; truncate the input (e.g. max_seq_length).")
        ids, types = unpad(input_ids, packing), unpad(token_type_ids, packing)
        table = config.position_scheme.learned_table
        hidden = self.embeddings(ids, types, packing.positions() if table else None)
        return self.encoder(hidden, packing, self.positions(packing)), packing

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> EncoderOutput:
        """input_ids, token_type_ids: (B, S) int64 or int32; attention_mask: (B, S) of 0 and 1.

        ``attention_mask`` defaults to all ones and ``token_type_ids`` to zeros. Zero rows give
        empty outputs; a row without real tokens gives zeros (and the pooler's value at zero).
        """
        hidden, packing = self.encode_packed(input_ids, attention_mask, token_type_ids)
        last_hidden_state = pad(hidden, packing)
        pooled = None
        if self.pooler is not None:
            # Without columns there is no first token: pool its padding value, zeros.
            first = last_hidden_state[:, 0] if packing.seqlen else \
                last_hidden_state.new_zeros(packing.batch_size, last_hidden_state.shape[-1])
            pooled = self.pooler(first)
        return EncoderOutput(last_hidden_state=last_hidden_state, pooler_output=pooled)


class MaskedLMHead(nn.Module):
    def __init__(self, config: MosaicConfig, word_embeddings: nn.Embedding):
        super().__init__()
        self.predictions = MaskedLMPredictions(config, word_embeddings)


class MosaicBertForMaskedLM(nn.Module):
    """Encoder (no pooler) under ``bert.`` plus the masked-LM head under ``cls.``."""

    def __init__(self, config: MosaicConfig):
        super().__init__()
        self.config = config
        self.bert = MosaicBertModel(config, add_pooler=False)
        self.cls = MaskedLMHead(config, self.bert.embeddings.word_embeddings)

    def tie_weights(self) -> None:
        """Point the decoder at the word-embedding matrix (again, e.g. after loading)."""
        self.cls.predictions.decoder.weight = self.bert.embeddings.word_embeddings.weight

    def masked_logits(self, hidden: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Vocabulary logits of the selected packed tokens only.

        hidden: (T, H) packed last hidden states (:meth:`MosaicBertModel.encode_packed`);
        positions: (M,) int64 indices into T -> (M, V), in the dtype of ``hidden``. The other
        T - M tokens never reach the decoder, the costliest matrix of a small model.
        """
        return self.cls.predictions(hidden[positions])

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> EncoderOutput:
        """As :meth:`MosaicBertModel.forward`, plus ``logits`` (B, S, V)."""
        hidden, packing = self.bert.encode_packed(input_ids, attention_mask, token_type_ids)
        logits = self.cls.predictions(hidden)
        return EncoderOutput(last_hidden_state=pad(hidden, packing), logits=pad(logits, packing))


def unwrap_encoder(model: nn.Module) -> MosaicBertModel:
    """The encoder inside ``model``: the model itself, or the ``bert`` of a masked-LM model."""
    if isinstance(model, MosaicBertForMaskedLM):
        return model.bert
    if isinstance(model, MosaicBertModel):
        return model
    raise TypeError(f"expected a MosaicBertModel or MosaicBertForMaskedLM, got {type(model).__name__}.")
