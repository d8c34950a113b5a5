"""The network being trained: encoder plus the checkpoint's pooling, as one module.

One module (one ``forward``) so that DistributedDataParallel can wrap it; anchors, positives and
negatives go through it in one call, their padding removed by the encoder's token packing.
"""

from __future__ import annotations

import torch
from torch import nn

from ..models import MosaicBertModel
from ..padding import pad
from ..pooling import Pooling
from ..tokenizer import TokenizedBatch


class SentenceModel(nn.Module):
    """Pooled sentence embeddings of a padded batch, differentiable.

    The pooler (``pooler.dense``), which sentence embeddings never use, is frozen so that every
    trainable parameter receives a gradient (DDP requires it) and is saved unchanged.

    Args:
        encoder: the transformer; trained in place.
        pooling: the checkpoint's pooling modes.
        autocast: None to compute in float32, or the dtype (``torch.bfloat16``) of autocast
            around the encoder (float32 master weights, float32 pooling).
    """

    def __init__(self, encoder: MosaicBertModel, pooling: Pooling,
                 autocast: torch.dtype | None = None):
        super().__init__()
        self.encoder = encoder
        self.pooling = pooling
        self.autocast = autocast
        if encoder.pooler is not None:
            encoder.pooler.requires_grad_(False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor) -> torch.Tensor:
        """(B, S) int64 inputs -> (B, D) float32 embeddings, unnormalised."""
        device = input_ids.device
        with torch.autocast(device.type, dtype=self.autocast or torch.bfloat16,
                            enabled=self.autocast is not None):
            hidden, packing = self.encoder.encode_packed(input_ids, attention_mask, token_type_ids)
        return self.pooling(pad(hidden.float(), packing), attention_mask)


def to_device(tokens: TokenizedBatch, device: torch.device) -> TokenizedBatch:
    return TokenizedBatch(tokens.input_ids.to(device), tokens.attention_mask.to(device),
                          tokens.token_type_ids.to(device), tokens.truncated)


def rows(tokens: TokenizedBatch, start: int, stop: int) -> TokenizedBatch:
    """Rows ``start:stop`` of a padded batch, cut to their own longest row."""
    mask = tokens.attention_mask[start:stop]
    width = int(mask.sum(dim=1).max()) if mask.numel() else 0
    return TokenizedBatch(tokens.input_ids[start:stop, :width], mask[:, :width],
                          tokens.token_type_ids[start:stop, :width], 0)
