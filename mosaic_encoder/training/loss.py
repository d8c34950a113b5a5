"""In-batch negatives loss (sentence-transformers' MultipleNegativesRankingLoss).

Every anchor is scored against every positive of the global batch, and against every hard negative
when there are some, by cosine similarity times ``scale``; cross-entropy picks its own positive.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def in_batch_negatives_loss(anchors: torch.Tensor, positives: torch.Tensor,
                            negatives: torch.Tensor | None = None, scale: float = 20.0,
                            first_label: int = 0) -> torch.Tensor:
    """Mean cross-entropy of picking each anchor's positive among all candidates.

    Args:
        anchors: (N, D) embeddings of this process's anchors.
        positives: (B, D) embeddings of the global batch's positives; anchor ``i`` belongs with
            positive ``first_label + i``.
        negatives: (B, D) embeddings of hard negatives, or None.
        scale: multiplies the cosine similarities (the inverse temperature).
        first_label: index of this process's first anchor in the global batch.
    Returns:
        float32 scalar: the mean over the N anchors.
    """
    candidates = positives if negatives is None else torch.cat([positives, negatives])
    scores = F.normalize(anchors.float(), dim=-1) @ F.normalize(candidates.float(), dim=-1).T
    labels = torch.arange(first_label, first_label + anchors.shape[0], device=anchors.device)
    return F.cross_entropy(scores * scale, labels)
