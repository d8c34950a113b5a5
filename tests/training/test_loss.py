"""In-batch negatives loss against an explicit computation, and its split over ranks."""

import math

import torch

from mosaic_encoder.training.loss import in_batch_negatives_loss


def _explicit(anchors, candidates, scale):
    total = 0.0
    for i, anchor in enumerate(anchors):
        scores = [scale * float(torch.cosine_similarity(anchor, c, dim=0)) for c in candidates]
        total += math.log(sum(math.exp(s) for s in scores)) - scores[i]
    return total / len(anchors)


def test_matches_explicit_cross_entropy():
    g = torch.Generator().manual_seed(0)
    anchors, positives, negatives = (torch.randn(6, 5, generator=g, dtype=torch.float64)
                                     for _ in range(3))
    loss = in_batch_negatives_loss(anchors, positives, scale=20.0)
    assert abs(float(loss) - _explicit(anchors, positives, 20.0)) < 1e-4
    with_negatives = in_batch_negatives_loss(anchors, positives, negatives, scale=20.0)
    assert abs(float(with_negatives) - _explicit(anchors, torch.cat([positives, negatives]),
                                                 20.0)) < 1e-4
    assert with_negatives > loss  # more candidates can only make the true pair less likely


def test_rank_slices_average_to_the_global_loss():
    """Each rank's loss over its own anchors (first_label = rank * n); their mean is the loss of
    the whole batch, which is what DDP's gradient averaging relies on."""
    g = torch.Generator().manual_seed(1)
    anchors, positives, negatives = (torch.randn(8, 4, generator=g) for _ in range(3))
    whole = in_batch_negatives_loss(anchors, positives, negatives)
    parts = [in_batch_negatives_loss(anchors[r * 2:(r + 1) * 2], positives, negatives,
                                     first_label=r * 2) for r in range(4)]
    torch.testing.assert_close(torch.stack(parts).mean(), whole)
