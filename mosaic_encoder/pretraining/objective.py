"""The masked-LM objective as one module, so that DistributedDataParallel can wrap it.

The encoder runs on the packed real tokens; only the selected tokens go through the decoder
(:meth:`~mosaic_encoder.models.MosaicBertForMaskedLM.masked_logits`), so no (tokens, vocabulary)
logits exist for the others. On CUDA the model runs under bfloat16 autocast (float32 master
weights); the cross-entropy is always computed in float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..models import MosaicBertForMaskedLM
from .masking import MaskedBatch


@dataclass
class MaskedLMResult:
    """Summed over the selected tokens of a batch.

    Attributes:
        loss: () float32 sum of cross-entropies (differentiable).
        correct: () int64 count of selected tokens whose most probable id is the original.
        count: selected tokens.
    """

    loss: torch.Tensor
    correct: torch.Tensor
    count: int


class MaskedLMObjective(nn.Module):
    """Summed cross-entropy of a masked-LM model on a :class:`MaskedBatch`."""

    def __init__(self, model: MosaicBertForMaskedLM):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                selected: torch.Tensor, labels: torch.Tensor) -> MaskedLMResult:
        """(B, S) ids, 0/1 mask, bool selection and original ids -> sums over the selection."""
        device = input_ids.device
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            hidden, packing = self.model.bert.encode_packed(input_ids, attention_mask)
            positions = selected.flatten()[packing.indices].nonzero().flatten()
            logits = self.model.masked_logits(hidden, positions)
        targets = labels.flatten()[packing.indices][positions]
        logits = logits.float()
        loss = F.cross_entropy(logits, targets, reduction="sum")
        correct = (logits.detach().argmax(dim=-1) == targets).sum()
        return MaskedLMResult(loss, correct, int(positions.numel()))

    def score(self, batch: MaskedBatch) -> MaskedLMResult:
        return self(batch.input_ids, batch.attention_mask, batch.selected, batch.labels)
