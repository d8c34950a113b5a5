"""Contrastive losses on in-batch negatives, as sentence-transformers defines them.

``mnrl`` (MultipleNegativesRankingLoss): every anchor is scored against every positive of the
global batch and every hard negative, by cosine similarity times ``scale``; cross-entropy picks its
own positive. ``symmetric`` (MultipleNegativesSymmetricRankingLoss; in sentence-transformers 6,
MultipleNegativesRankingLoss with directions query_to_doc and doc_to_query, per direction)
averages that with the reverse direction: every positive picks its own anchor among all anchors. With Matryoshka ``dims``
(MatryoshkaLoss), the loss is the sum of the chosen loss on the embeddings cut to each of the first
``d`` dimensions, so that truncated embeddings stay useful.
"""

from __future__ import annotations

from dataclasses import dataclass

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
        negatives: (K * B, D) embeddings of hard negatives (column by column), or None.
        scale: multiplies the cosine similarities (the inverse temperature).
        first_label: index of this process's first anchor in the global batch.
    Returns:
        float32 scalar: the mean over the N anchors.
    """
    candidates = positives if negatives is None else torch.cat([positives, negatives])
    scores = F.normalize(anchors.float(), dim=-1) @ F.normalize(candidates.float(), dim=-1).T
    labels = torch.arange(first_label, first_label + anchors.shape[0], device=anchors.device)
    return F.cross_entropy(scores * scale, labels)


@dataclass(frozen=True)
class ContrastiveLoss:
    """The loss a run trains with.

    Attributes:
        kind: ``mnrl`` or ``symmetric`` (see the module docstring).
        scale: multiplies cosine similarities.
        dims: Matryoshka dimensions, or () for the full embeddings only.
    """

    kind: str = "mnrl"
    scale: float = 20.0
    dims: tuple[int, ...] = ()

    def __call__(self, anchors: torch.Tensor, positives: torch.Tensor,
                 negatives: torch.Tensor | None, first: int, count: int) -> torch.Tensor:
        """This process's loss: the mean over its ``count`` anchors (and, for ``symmetric``, its
        positives), which start at row ``first`` of the global batch.

        Args:
            anchors, positives: (B, D) embeddings of the global batch; row i of each belong
                together.
            negatives: (K * B, D) hard negatives, column by column, or None.
        Returns:
            float32 scalar.
        """
        total = anchors.new_zeros((), dtype=torch.float32)
        for dim in self.dims or (anchors.shape[-1],):
            a, p = anchors[:, :dim], positives[:, :dim]
            n = None if negatives is None else negatives[:, :dim]
            loss = in_batch_negatives_loss(a[first:first + count], p, n, self.scale, first)
            if self.kind == "symmetric":
                reverse = in_batch_negatives_loss(p[first:first + count], a, None, self.scale, first)
                loss = (loss + reverse) / 2
            total = total + loss
        return total
