"""Scoring by length and depth: a model that reads everything scores 1.0, one that reads the first
256 tokens scores exactly chance on the needles past them."""

import pytest

from mosaic_encoder.longembed.evaluation import EmbeddingSettings, evaluate
from mosaic_encoder.longembed.metrics import chance
from mosaic_encoder.longembed.needle import needle_task
from mosaic_encoder.longembed.passkey import passkey_task

from .conftest import NameReader


@pytest.fixture(scope="module")
def tasks(counter, haystack):
    return [make(length) for length in (256, 2048)
            for make in (lambda n: passkey_task(counter, n, seed=0),
                         lambda n: needle_task(counter, haystack, n, seed=0))]


def test_a_model_that_reads_everything_scores_one(tasks, counter):
    rows = evaluate(NameReader(), tasks, counter, depths=True)
    assert [(r.task, r.length) for r in rows] == [("passkey", 256), ("needle", 256),
                                                  ("passkey", 2048), ("needle", 2048)]
    for row in rows:
        assert (row.scores.ndcg_at_1, row.scores.recall_at_1, row.scores.mrr) == (1.0, 1.0, 1.0)
        assert row.scores.queries == 50 and row.documents == 100
        assert (row.truncated, row.needles_cut, row.max_seq_length) == (0, 0, None)
        assert all(bucket.ndcg_at_1 == 1.0 and bucket.queries >= 3
                   for bucket in row.depths.values())


def test_a_model_that_reads_256_tokens_is_at_chance_past_them(tasks, counter):
    hit, mrr = chance(100)
    rows = evaluate(NameReader(256), tasks, counter, depths=True)
    for row, task in zip(rows, tasks):
        if task.length == 256:  # nothing cut
            assert (row.truncated, row.scores.ndcg_at_1) == (0, 1.0)
            continue
        assert row.truncated == 100 and row.max_seq_length == 256
        answering = task.documents[:50]
        past = sum(d.needle_offset >= 254 for d in answering)  # no token of the needle seen
        seen = sum(d.needle_offset + d.needle_tokens <= 254 for d in answering)
        assert row.needles_cut == 50 - seen and past >= 40
        # Queries whose needle was read rank first; those past the cut exactly at chance.
        low = (seen + hit * (50 - seen)) / 50
        high = (50 - past + hit * past) / 50
        assert low <= row.scores.ndcg_at_1 <= high
        last = row.depths["last"]
        assert (last.ndcg_at_1, last.mrr) == (pytest.approx(hit), pytest.approx(mrr))
        assert row.depths["first"].ndcg_at_1 == 1.0


def test_prompts_count_against_the_length(counter):
    task = passkey_task(counter, 256, seed=0)
    settings = EmbeddingSettings(document_prompt="search document: ")
    row, = evaluate(NameReader(256), [task], counter, settings)
    assert row.truncated == sum(d.tokens + 3 > 256 for d in task.documents) > 0
