"""Recall@1 and MRR on hand-made embeddings."""

import pytest
import torch

from mosaic_encoder.training.evaluation import retrieval_metrics


def test_recall_and_mrr():
    positives = torch.eye(3)
    # anchor 0 finds its own positive first; anchor 1 ranks its own second; anchor 2 third.
    anchors = torch.tensor([[1.0, 0.1, 0.0], [0.9, 0.5, 0.0], [0.9, 0.5, 0.1]])
    metrics = retrieval_metrics(anchors, positives)
    assert metrics.size == 3
    assert metrics.recall_at_1 == pytest.approx(1 / 3)
    assert metrics.mrr == pytest.approx((1 + 1 / 2 + 1 / 3) / 3)


def test_ties_count_against_the_anchor():
    metrics = retrieval_metrics(torch.ones(2, 2), torch.ones(2, 2))
    assert metrics.recall_at_1 == 0.0 and metrics.mrr == pytest.approx(0.5)
