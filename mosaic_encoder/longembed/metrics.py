"""Ranking metrics of queries that each have exactly one relevant document, ties included.

With one relevant document per query (as in LongEmbed's synthetic tasks), nDCG@1, recall@1 and
precision@1 are one number: whether that document ranks first. MRR is the mean over queries of 1
over its rank among all candidates (not cut at 10, as MTEB's ``mrr_at_10`` is).

**Ties.** Documents a model cannot tell apart get the same score; truncation makes that common
(every passkey document whose key lies past the cut is the same text to the model). A tie is
broken at random, and the metrics are their expectation over that draw: with ``g`` documents
scored above the relevant one and ``t`` others level with it, it ranks first with probability
``[g == 0] / (t + 1)`` and its expected reciprocal rank is the mean of ``1 / (g + 1 + j)`` for
``j`` in ``0..t``. A model that sees nothing of the needles thus scores exactly chance: 1 / N
and H(N) / N for N candidates. Scores within :data:`TIE_TOLERANCE` of each other are level:
float32 sums over differently sized batches differ by about 1e-7.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TIE_TOLERANCE = 1e-6


@dataclass(frozen=True)
class QueryScores:
    """Per query: ``first``, the probability that its document ranks first (its nDCG@1 and
    recall@1), and ``reciprocal``, its expected reciprocal rank; float64 (Q,) each."""

    first: np.ndarray
    reciprocal: np.ndarray


def query_scores(scores: np.ndarray, relevant: np.ndarray) -> QueryScores:
    """Ranking metrics of each query.

    Args:
        scores: (Q, D) similarities of Q queries to D candidate documents.
        relevant: (Q,) integer index of each query's one relevant document.
    """
    scores = np.asarray(scores, dtype=np.float64)
    relevant = np.asarray(relevant)
    own = scores[np.arange(len(relevant)), relevant][:, None]
    above = (scores > own + TIE_TOLERANCE).sum(axis=1)
    level = (np.abs(scores - own) <= TIE_TOLERANCE).sum(axis=1) - 1
    # harmonic[n] = 1 + 1/2 + ... + 1/n
    harmonic = np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, scores.shape[1] + 1))])
    first = np.where(above == 0, 1.0 / (level + 1), 0.0)
    reciprocal = (harmonic[above + level + 1] - harmonic[above]) / (level + 1)
    return QueryScores(first, reciprocal)


@dataclass(frozen=True)
class Retrieval:
    """Means over a set of queries; None over no query."""

    queries: int
    ndcg_at_1: float | None
    recall_at_1: float | None
    mrr: float | None

    def as_dict(self) -> dict:
        return {"queries": self.queries, "ndcg_at_1": self.ndcg_at_1,
                "recall_at_1": self.recall_at_1, "mrr": self.mrr}


def retrieval(scores: QueryScores, chosen: np.ndarray | None = None) -> Retrieval:
    """The means over the queries ``chosen`` (a boolean (Q,) mask; default all)."""
    first, reciprocal = scores.first, scores.reciprocal
    if chosen is not None:
        first, reciprocal = first[chosen], reciprocal[chosen]
    if not len(first):
        return Retrieval(0, None, None, None)
    hit = float(first.mean())
    return Retrieval(len(first), hit, hit, float(reciprocal.mean()))


def chance(documents: int) -> tuple[float, float]:
    """nDCG@1 and MRR of a ranking that knows nothing, among ``documents`` candidates."""
    return 1.0 / documents, float(np.sum(1.0 / np.arange(1, documents + 1)) / documents)
