"""The Ray engine on a real local Ray (``ray.init(num_cpus=2)``, one per module): the same
embeddings as ``SentenceEncoder.encode``, and a worker process killed mid-run is retried."""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from helpers import WEIGHTS
from mosaic_encoder import MosaicError
from mosaic_encoder.cli import main
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


def test_two_workers_equal_sentence_encoder(local_ray, corpus, reference, tmp_path, capsys):
    status = main(["embed-corpus", str(corpus), str(tmp_path / "out"), "--model", str(MODEL),
                   "--max-tokens", "64", "--rows-per-shard", "3", "--engine", "ray",
                   "--num-workers", "2"])
    assert status == 0
    assert "embedded 12 row(s) into 5 shard(s)" in capsys.readouterr().err
    check_output(tmp_path / "out", reference)


def test_gpu_device_needs_gpus_per_worker(tmp_path, corpus, capsys):
    status = main(["embed-corpus", str(corpus), str(tmp_path / "out"), "--model", str(MODEL),
                   "--engine", "ray", "--device", "cuda"])
    assert status == 1 and not (tmp_path / "out").exists()
    assert "--device cuda with --engine ray needs --gpus-per-worker" in capsys.readouterr().err


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


def test_worker_errors_arrive_as_one_sentence(local_ray, corpus, tmp_path):
    class ReadsAnotherColumn(ShardEmbedder):
        """Sees rows without the text column, as if the input had changed after the scan."""

        def __init__(self, settings, output, id_type, model_sha256):
            super().__init__(dict(settings, text_column="body"), output, id_type, model_sha256)

    settings = CorpusSettings(str(MODEL), rows_per_shard=100)
    with pytest.raises(MosaicError, match=r"corpus.jsonl line 1 has no field 'body' \(choose it "
                                          r"with --text-column\) \(1 shard\(s\) failed; the "
                                          r"others are written, rerun to complete them\)"
                                          r"(; Ray's own messages are in /.*\.log)?\.$"):
        embed_corpus(corpus, tmp_path / "out", settings, "ray", embedder=ReadsAnotherColumn)
    assert not list((tmp_path / "out").glob("part-*"))


@pytest.mark.parametrize("options, message", [
    (["--address", "127.0.0.1:1"], "no Ray cluster answers at --address 127.0.0.1:1 (Connection "
                                   "refused)"),
    (["--address", "ray://127.0.0.1:1"], "no Ray cluster answers at --address ray://127.0.0.1:1"),
    (["--address", "nonsense"], "--address 'nonsense' is not auto, HOST:PORT or ray://HOST:PORT"),
    (["--gpus-per-worker", "nan"], "--gpus-per-worker must be a finite number at least 0, got nan"),
    (["--cpus-per-worker", "inf"], "--cpus-per-worker must be a finite number above 0, got inf"),
    (["--cpus-per-worker", "0"], "--cpus-per-worker must be a finite number above 0, got 0.0"),
])
def test_bad_engine_options_are_one_sentence_before_any_work(tmp_path, corpus, capsys, options,
                                                             message):
    status = main(["embed-corpus", str(corpus), str(tmp_path / "out"), "--model", str(MODEL),
                   "--engine", "ray", *options])
    err = capsys.readouterr().err
    assert status == 1 and err == f"error: {message}" + err[len(message) + 7:]
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


@pytest.mark.parametrize("options, message", [
    ({"gpus_per_worker": 1}, "room for 0 of the 1 worker(s) asked for (1 CPU and 1 GPU each; its "
                             "largest node has 2 CPU and 0 GPU)"),
    ({"cpus_per_worker": 3}, "room for 0 of the 1 worker(s)"),
    ({"num_workers": 3}, "room for 2 of the 3 worker(s)"),
])
def test_resources_the_cluster_lacks_fail_at_once(local_ray, corpus, tmp_path, options, message):
    settings = CorpusSettings(str(MODEL), rows_per_shard=100)
    with pytest.raises(MosaicError) as info:
        embed_corpus(corpus, tmp_path / "out", settings, "ray", **options)
    assert message in str(info.value) and not (tmp_path / "out").exists()


def test_a_local_run_prints_only_our_line(corpus, tmp_path):
    """A fresh process that starts its own local Ray and succeeds: stderr holds our summary line
    alone; Ray's notices (token authentication, an error-level core_worker line about actor
    arguments, Ray Data's progress) went to its log file, removed after a successful run."""
    result = subprocess.run(
        [sys.executable, "-m", "mosaic_encoder", "embed-corpus", str(corpus), str(tmp_path / "out"),
         "--model", str(MODEL), "--engine", "ray", "--max-tokens", "64"],
        capture_output=True, text=True, timeout=300,
        env={name: value for name, value in os.environ.items() if name != "RAY_ADDRESS"})
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("embedded 12 row(s) into 1 shard(s)"), lines


def test_a_server_that_is_not_ray_is_one_sentence_at_once(corpus, tmp_path, capsys):
    """An address where an HTTP server listens: Ray would retry it for minutes, printing three
    warnings every 40 seconds; the check refuses it before any work."""
    server = subprocess.Popen([sys.executable, "-u", "-m", "http.server", "--bind", "127.0.0.1",
                               "0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        port = server.stdout.readline().split(" port ")[1].split()[0]
        status = main(["embed-corpus", str(corpus), str(tmp_path / "out"), "--model", str(MODEL),
                       "--engine", "ray", "--address", f"127.0.0.1:{port}"])
    finally:
        server.kill()
        server.wait()
    err = capsys.readouterr().err
    assert status == 1 and err == (f"error: the server at --address 127.0.0.1:{port} is not a Ray "
                                   f"cluster (it does not answer as a gRPC server within 10 s); "
                                   f"give the address of the head node's GCS (port 6379) or "
                                   f"ray://HOST:10001.\n")
    assert not (tmp_path / "out").exists()
