"""Recall@1 and MRR on hand-made embeddings, and a run's logged metrics recomputed apart."""

import numpy as np
import pytest
import torch

from helpers import TINY, pairs, write_jsonl
from mosaic_encoder import SentenceEncoder
from mosaic_encoder.training.config import TrainConfig
from mosaic_encoder.training.contrastive import train
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


def test_logged_metrics_equal_those_of_the_published_model(tmp_path):
    """The held-out metrics a run logs at its end are those of the model it publishes, computed
    here independently (SentenceEncoder embeddings, NumPy ranks) on the same pairs."""
    rows = pairs(12)
    data = write_jsonl(tmp_path / "pairs.jsonl", rows)
    result = train(TrainConfig(model=TINY, data=(data,), eval_data=data, output=tmp_path / "run",
                               steps=2, batch_size=4, max_seq_length=16, learning_rate=1e-3,
                               warmup_steps=0, save_every=0, progress=False, tensorboard=False))
    encoder = SentenceEncoder(tmp_path / "run", max_seq_length=16)
    anchors = encoder.encode([r["anchor"] for r in rows])
    positives = encoder.encode([r["positive"] for r in rows])
    scores = anchors @ positives.T
    ranks = (scores >= np.diag(scores)[:, None]).sum(axis=1)
    last = result.evaluations[-1]
    assert last["step"] == 2 and last["eval_size"] == len(rows)
    assert last["eval_recall_at_1"] == pytest.approx(float((ranks == 1).mean()), abs=1e-9)
    assert last["eval_mrr"] == pytest.approx(float((1 / ranks).mean()), abs=1e-6)
