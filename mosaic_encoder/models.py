"""Whole models: the encoder (optionally with pooler) and the masked-LM model.

Both take a padded batch, pack the real tokens once, run every layer on the packed tokens, and
return padded outputs with exact zeros at padded positions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .alibi import alibi_slopes
from .config import MosaicConfig
from .errors import InputError
from .layers import Embeddings, Encoder, MaskedLMPredictions, Pooler
from .padding import Packing, pad


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


_INDEX_DTYPES = (torch.int64, torch.int32)  # what nn.Embedding accepts as indices


def _check_inputs(input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                  token_type_ids: torch.Tensor | None,
                  config: MosaicConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate a padded batch; returns the attention mask and token type ids, defaults filled in.

    Ids must be int64 or int32 (a uint8 id of 300 would silently wrap to 44, a float id would be
    truncated); the mask may be of any dtype but must hold exactly 0 and 1 (:meth:`Packing.from_mask`
    checks the values). A batch of zero rows or of zero columns is valid.
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
    if input_ids.numel():
        if int(input_ids.min()) < 0 or int(input_ids.max()) >= config.vocab_size:
            raise InputError(f"input_ids must lie in [0, {config.vocab_size}), got values in "
                             f"[{int(input_ids.min())}, {int(input_ids.max())}].")
        if int(token_type_ids.min()) < 0 or int(token_type_ids.max()) >= config.type_vocab_size:
            raise InputError(f"token_type_ids must lie in [0, {config.type_vocab_size}).")
    return attention_mask, token_type_ids


class MosaicBertModel(nn.Module):
    """MosaicBERT encoder: embeddings, post-LN layers with ALiBi attention and GLU, pooler.

    With a classic configuration (absolute positions, GELU feed-forward) the same class is a
    classic BERT encoder.
    """

    def __init__(self, config: MosaicConfig, add_pooler: bool = True):
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.encoder = Encoder(config)
        self.pooler = Pooler(config) if add_pooler else None

    def encode_packed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                      token_type_ids: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, Packing]:
        """Run the encoder; returns the packed last hidden states (T, H) and their packing."""
        attention_mask, token_type_ids = _check_inputs(input_ids, attention_mask, token_type_ids,
                                                       self.config)
        packing = Packing.from_mask(attention_mask)
        config = self.config
        if not config.uses_alibi and packing.max_seqlen > config.max_position_embeddings:
            raise InputError(f"a sequence of {packing.max_seqlen} tokens exceeds this checkpoint's "
                             f"max_position_embeddings ({config.max_position_embeddings}); "
                             f"truncate the input (e.g. max_seq_length).")
        ids = input_ids.flatten()[packing.indices]
        types = token_type_ids.flatten()[packing.indices]
        hidden = self.embeddings(ids, types, None if config.uses_alibi else packing.positions())
        slopes = alibi_slopes(config.num_attention_heads, device=hidden.device) \
            if config.uses_alibi else None
        return self.encoder(hidden, packing, slopes), packing

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
