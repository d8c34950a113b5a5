"""nDCG@1, recall@1 and MRR with one relevant document per query, ties in expectation."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mosaic_encoder.longembed.metrics import chance, query_scores, retrieval


def test_a_hand_computed_case():
    # Query 0: its document (1) is second behind one -> rank 2: first 0, reciprocal 1/2.
    # Query 1: its document (0) is level with one other and above the third -> rank 1 or 2 with
    #   equal chance: first 1/2, reciprocal (1 + 1/2) / 2 = 3/4.
    # Query 2: its document (2) is alone on top -> first 1, reciprocal 1.
    scores = np.array([[0.9, 0.5, 0.1],
                       [0.7, 0.7, 0.2],
                       [0.1, 0.2, 0.3]])
    per_query = query_scores(scores, np.array([1, 0, 2]))
    assert per_query.first.tolist() == [0.0, 0.5, 1.0]
    assert per_query.reciprocal.tolist() == [0.5, 0.75, 1.0]
    mean = retrieval(per_query)
    assert mean.queries == 3
    assert mean.ndcg_at_1 == mean.recall_at_1 == pytest.approx(0.5)
    assert mean.mrr == pytest.approx((0.5 + 0.75 + 1.0) / 3)
    only_last = retrieval(per_query, np.array([False, False, True]))
    assert (only_last.queries, only_last.ndcg_at_1, only_last.mrr) == (1, 1.0, 1.0)
    assert retrieval(per_query, np.zeros(3, dtype=bool)).as_dict() == {
        "queries": 0, "ndcg_at_1": None, "recall_at_1": None, "mrr": None}


def test_everything_level_is_exactly_chance():
    per_query = query_scores(np.zeros((4, 100)), np.arange(4))
    hit, mrr = chance(100)
    assert np.allclose(per_query.first, hit) and np.allclose(per_query.reciprocal, mrr)
    assert mrr == pytest.approx(sum(1 / k for k in range(1, 101)) / 100)


def test_float_noise_counts_as_a_tie():
    per_query = query_scores(np.array([[0.5, 0.5 + 1e-8]]), np.array([0]))
    assert per_query.first.tolist() == [0.5]


@given(st.lists(st.integers(0, 3), min_size=2, max_size=8), st.data())
def test_expectation_equals_the_mean_over_every_tie_break(levels, data):
    """Integer scores with ties: the expected rank metrics equal the average over all orders of
    the tied documents, enumerated."""
    import itertools

    relevant = data.draw(st.integers(0, len(levels) - 1))
    scores = np.array([levels], dtype=float)
    per_query = query_scores(scores, np.array([relevant]))
    above = sum(s > levels[relevant] for s in levels)
    tied = [i for i, s in enumerate(levels) if s == levels[relevant]]
    ranks = [above + 1 + order.index(relevant) for order in itertools.permutations(tied)]
    assert per_query.first[0] == pytest.approx(np.mean([r == 1 for r in ranks]))
    assert per_query.reciprocal[0] == pytest.approx(np.mean([1 / r for r in ranks]))
