"""Contrastive losses against an explicit computation and sentence-transformers' own, and their
split over ranks."""

import math
import os

import pytest
import torch

from mosaic_encoder.training.loss import ContrastiveLoss, in_batch_negatives_loss

from helpers import TINY, pairs


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


def _columns(rows=6, dim=8, negatives=2, seed=2):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(rows, dim, generator=g) for _ in range(2 + negatives)]


def _theirs(kind, model=None):
    """sentence-transformers' loss: MultipleNegativesRankingLoss, or its symmetric form (what
    MultipleNegativesSymmetricRankingLoss now forwards to)."""
    from sentence_transformers.sentence_transformer import losses

    if kind == "mnrl":
        return losses.MultipleNegativesRankingLoss(model, scale=20.0)
    return losses.MultipleNegativesRankingLoss(model, scale=20.0,
                                               directions=("query_to_doc", "doc_to_query"),
                                               partition_mode="per_direction")


@pytest.mark.parametrize("kind", ["mnrl", "symmetric"])
@pytest.mark.parametrize("negatives", [0, 1, 3])
def test_equals_sentence_transformers(kind, negatives):
    """On the same embeddings: MultipleNegativesRankingLoss or its symmetric variant, with any
    number of hard-negative columns."""
    theirs = _theirs(kind)
    columns = _columns(negatives=negatives)
    expected = theirs.compute_loss_from_embeddings(columns, None)
    hard = torch.cat(columns[2:]) if negatives else None
    ours = ContrastiveLoss(kind, 20.0)(columns[0], columns[1], hard, 0, 6)
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("kind", ["mnrl", "symmetric"])
def test_rank_shares_average_to_the_global_loss(kind):
    anchors, positives, negatives = _columns(rows=8, negatives=1)
    loss = ContrastiveLoss(kind, 20.0, (8, 3))
    whole = loss(anchors, positives, negatives, 0, 8)
    parts = [loss(anchors, positives, negatives, r * 2, 2) for r in range(4)]
    torch.testing.assert_close(torch.stack(parts).mean(), whole)


@pytest.mark.parametrize("kind", ["mnrl", "symmetric"])
def test_matryoshka_equals_sentence_transformers(kind):
    """MatryoshkaLoss over a real SentenceTransformer (this package's tiny encoder) on one batch
    of texts, against this loss on the same model's embeddings."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from mosaic_encoder import to_sentence_transformer

    from sentence_transformers.sentence_transformer.losses import MatryoshkaLoss

    model = to_sentence_transformer(TINY).eval()  # the same embeddings in both: no dropout
    dims = (192, 64, 16)
    theirs = MatryoshkaLoss(model, _theirs(kind, model), list(dims))
    rows = pairs(5, negatives=True)
    features = [model.tokenize([r[c] for r in rows]) for c in ("anchor", "positive", "negative")]
    expected = theirs(features, None)
    with torch.no_grad():
        embeddings = [model(dict(f))["sentence_embedding"] for f in features]
    ours = ContrastiveLoss(kind, 20.0, dims)(*embeddings, 0, 5)
    torch.testing.assert_close(ours, expected.detach(), rtol=0, atol=1e-5)
