"""The Ray engine on a real local Ray (``ray.init(num_cpus=2)``, one per module): the same
embeddings as ``SentenceEncoder.encode``, and a worker process killed mid-run is retried."""

import json
import os
import signal

import numpy as np
import pytest

from conftest import WEIGHTS
from mosaic_encoder.corpus import CorpusSettings, embed_corpus
from mosaic_encoder.corpus.ray_engine import ShardEmbedder
from mosaic_encoder.corpus.shards import read_embeddings
from mosaic_encoder.sentence import SentenceEncoder

ray = pytest.importorskip("ray")

MODEL = WEIGHTS / "mosaic-tiny"
TEXTS = [f"document {i}: " + "long context words " * (1 + (i * 5) % 11) for i in range(12)]


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("ray") / "corpus.jsonl"
    rows = [{"id": f"doc-{i}", "text": text} for i, text in enumerate(TEXTS)]
    rows.insert(5, {"id": "blank", "text": "  "})
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def reference():
    embeddings = SentenceEncoder(MODEL).encode(TEXTS, max_tokens_per_batch=64)
    return {f"doc-{i}": row for i, row in enumerate(embeddings)}


def check_output(directory, reference):
    ids, embeddings = read_embeddings(directory)
    assert sorted(ids) == sorted(reference) and len(set(ids)) == len(ids)
    np.testing.assert_allclose(embeddings, np.stack([reference[i] for i in ids]), rtol=0,
                               atol=1e-6)
    manifest = json.loads((directory / "manifest.json").read_text())
    assert manifest["complete"] and manifest["rows"] == len(TEXTS) + 1
    assert manifest["bad_rows"]["rows"] == [{"id": "blank", "file": "corpus.jsonl", "row": 5,
                                             "reason": "empty"}]


def test_two_workers_equal_sentence_encoder(local_ray, corpus, reference, tmp_path):
    settings = CorpusSettings(str(MODEL), max_tokens_per_batch=64, rows_per_shard=3)
    summary = embed_corpus(corpus, tmp_path / "out", settings, "ray", num_workers=2)
    assert (summary.computed, summary.written, summary.bad_rows) == (5, 12, 1)
    check_output(tmp_path / "out", reference)


def test_killed_worker_is_retried(local_ray, corpus, reference, tmp_path):
    marker = tmp_path / "kill-once"
    marker.touch()

    class DiesOnce(ShardEmbedder):
        """Kills its own process (SIGKILL) on its first shard while the marker file exists."""

        def __call__(self, batch):
            try:
                os.unlink(marker)
            except FileNotFoundError:
                return super().__call__(batch)
            os.kill(os.getpid(), signal.SIGKILL)

    settings = CorpusSettings(str(MODEL), max_tokens_per_batch=64, rows_per_shard=3)
    summary = embed_corpus(corpus, tmp_path / "out", settings, "ray", num_workers=1,
                           embedder=DiesOnce)
    assert not marker.exists()
    assert (summary.computed, summary.written) == (5, 12)
    check_output(tmp_path / "out", reference)
