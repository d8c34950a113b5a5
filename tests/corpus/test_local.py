"""``embed-corpus`` with the local engine through its real entry point, as a user meets it:
identical to ``SentenceEncoder.encode``, resumable after a killed driver, clear errors."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import WEIGHTS
from mosaic_encoder.cli import main
from mosaic_encoder.corpus.shards import read_embeddings
from mosaic_encoder.sentence import SentenceEncoder

MODEL = WEIGHTS / "mosaic-tiny"


def embed_corpus(*args, module="mosaic_encoder"):
    """The command in a fresh interpreter (``python -m module embed-corpus ...``)."""
    env = dict(os.environ, PYTHONIOENCODING="utf-8")
    return subprocess.run([sys.executable, "-m", module, "embed-corpus", *map(str, args)],
                          capture_output=True, text=True, env=env)


@pytest.fixture
def run(capsys):
    """The command in this process: (exit status, stdout, stderr)."""
    def call(*args):
        status = main(["embed-corpus", *map(str, args)])
        captured = capsys.readouterr()
        return status, captured.out, captured.err
    return call


def make_corpus(directory, texts):
    """texts[:half] as JSON lines with int ids, the rest as Parquet (3-row groups); ids are 0..N-1."""
    directory.mkdir()
    half = len(texts) // 2
    with open(directory / "part-a.jsonl", "w", encoding="utf-8") as stream:
        stream.writelines(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts[:half]))
    pq.write_table(pa.table({"id": pa.array(range(half, len(texts)), pa.int64()),
                             "text": pa.array(texts[half:], pa.string())}),
                   directory / "part-b.parquet", row_group_size=3)
    return directory


@pytest.fixture(scope="module")
def texts():
    words = "the long document corpus of filings papers and code bases embeds well".split()
    return [" ".join(words[(i * 7) % len(words):] + words[: i % 5] * (1 + i % 9))
            for i in range(26)]


@pytest.fixture(scope="module")
def reference(texts):
    return SentenceEncoder(MODEL).encode(texts, max_tokens_per_batch=96)


def test_output_equals_sentence_encoder(tmp_path, texts, reference):
    corpus = make_corpus(tmp_path / "in", texts)
    result = embed_corpus(corpus, tmp_path / "out", "--model", MODEL, "--rows-per-shard", 4,
                          "--max-tokens", 96)
    assert result.returncode == 0, result.stderr
    assert "embedded 26 row(s) into 8 shard(s)" in result.stderr
    ids, embeddings = read_embeddings(tmp_path / "out")
    assert sorted(ids) == list(range(len(texts)))
    assert embeddings.dtype == np.float32
    np.testing.assert_allclose(embeddings, reference[ids], rtol=0, atol=1e-6)
    table = pq.read_table(tmp_path / "out" / "part-00001-000000.parquet")
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), 192)
    assert table.schema.field("id").type == pa.int64()
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["complete"] and manifest["rows"] == manifest["embedded"] == 26
    assert manifest["model"]["dtype"] == "float32" and manifest["model"]["normalize"]
    assert manifest["model"]["pooling"] == ["mean_tokens"]
    assert manifest["model"]["embedding_dim"] == 192
    assert manifest["bad_rows"] == {"count": 0, "rows": []}


def test_bad_rows_are_reported_not_fatal(tmp_path, run):
    corpus = tmp_path / "in.jsonl"
    rows = [{"id": "a", "text": "fine"}, {"id": "b", "text": ""}, {"id": "c", "text": None},
            {"id": "d", "text": ["a list"]}, {"id": "e", "text": "also fine"}]
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows))
    status, _, stderr = run(corpus, tmp_path / "out", "--model", MODEL, "--rows-per-shard", 2)
    assert status == 0, stderr
    assert "3 bad" in stderr
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["rows"] == 5 and manifest["embedded"] == 2
    assert manifest["bad_rows"]["count"] == 3
    assert [(r["id"], r["reason"]) for r in manifest["bad_rows"]["rows"]] == [
        ("b", "empty"), ("c", "missing (null)"), ("d", "not a string (list)")]
    ids, embeddings = read_embeddings(tmp_path / "out")
    assert ids == ["a", "e"]
    np.testing.assert_allclose(embeddings, SentenceEncoder(MODEL).encode(["fine", "also fine"]),
                               atol=1e-6)


KILL_DURING_THIRD_SHARD = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from mosaic_encoder.atomic import atomic_path
    from mosaic_encoder.cli import main
    from mosaic_encoder.corpus import shards

    written = []
    original = shards.atomic_write

    def atomic_write(target, write):
        # The third shard: half a file under its temporary name, then the driver dies (SIGKILL
        # runs no cleanup, as a power cut or the OOM killer would).
        if Path(target).name.startswith("part-"):
            written.append(target)
            if len(written) == 3:
                with atomic_path(target) as temporary:
                    temporary.write_bytes(b"PAR1 half a shard")
                    os.kill(os.getpid(), signal.SIGKILL)
        original(target, write)

    shards.atomic_write = atomic_write
    sys.exit(main(sys.argv[1:]))
""")


def test_killed_driver_resumes_missing_shards_only(tmp_path, texts, reference, run):
    corpus = make_corpus(tmp_path / "in", texts)
    out = tmp_path / "out"
    args = [corpus, out, "--model", MODEL, "--rows-per-shard", 4, "--max-tokens", 96]
    killed = subprocess.run([sys.executable, "-c", KILL_DURING_THIRD_SHARD, "embed-corpus",
                             *map(str, args)], capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr
    finished = sorted(out.glob("part-*.parquet"))
    assert [p.name for p in finished] == ["part-00000-000000.parquet", "part-00000-000001.parquet"]
    assert len(list(out.glob(".part-00000-000002.parquet.*.tmp"))) == 1
    assert not json.loads((out / "manifest.json").read_text())["complete"]
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in finished}

    resumed = embed_corpus(*args)
    assert resumed.returncode == 0, resumed.stderr
    assert "into 6 shard(s)" in resumed.stderr and "(2 shard(s) were already done)" in \
        resumed.stderr
    assert {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in finished} == before
    assert not list(out.glob(".*.tmp"))
    ids, embeddings = read_embeddings(out)
    assert sorted(ids) == list(range(len(texts))) and len(ids) == len(texts)
    np.testing.assert_allclose(embeddings, reference[ids], rtol=0, atol=1e-6)

    listing = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    status, _, stderr = run(*args)
    assert status == 0 and "into 0 shard(s)" in stderr
    assert {p.name for p in out.iterdir()} == set(listing)
    assert all(p.stat().st_mtime_ns == listing[p.name] for p in out.glob("part-*"))
    assert json.loads((out / "manifest.json").read_text())["complete"]


def test_bad_input_fails_before_work_and_keeps_what_was_written(tmp_path, texts, run):
    corpus = make_corpus(tmp_path / "in", texts[:6])
    out = tmp_path / "out"
    assert run(corpus, out, "--model", MODEL, "--rows-per-shard", 2)[0] == 0
    snapshot = {p.name: p.read_bytes() for p in out.iterdir()}

    def fails(*args, message):
        status, stdout, stderr = run(*args)
        assert status == 1 and stdout == ""
        assert stderr.startswith("error: ") and message in stderr, stderr
        assert len(stderr.strip().splitlines()) == 1
        assert {p.name: p.read_bytes() for p in out.iterdir()} == snapshot

    fails(corpus, out, "--model", MODEL, "--rows-per-shard", 2, "--text-column", "body",
          message="has no field 'body' (choose it with --text-column)")
    fails(corpus, out, "--model", MODEL, "--rows-per-shard", 3,
          message="holds shards of a different input (rows_per_shard differs")
    fails(corpus, out, "--model", WEIGHTS / "mosaic-tiny-mlm", "--rows-per-shard", 2,
          message="holds shards of a different model (weights_sha256")
    fails(corpus, out, "--model", MODEL, "--rows-per-shard", 2, "--dtype", "bfloat16",
          message="holds shards of a different model (dtype 'float32' there, 'bfloat16' now)")
    (corpus / "part-c.jsonl").write_bytes(b'{"id": 100, "text": "caf\xe9"}\n')
    fails(corpus, out, "--model", MODEL, "--rows-per-shard", 2,
          message="part-c.jsonl line 1 is not UTF-8")
    (corpus / "part-c.jsonl").unlink()
    (corpus / "part-d.parquet").write_bytes(b"not parquet at all")
    fails(corpus, out, "--model", MODEL, "--rows-per-shard", 2,
          message="part-d.parquet is not a readable Parquet file")
    (corpus / "part-d.parquet").unlink()
    fails(corpus, out, "--model", MODEL, "--engine", "local", "--num-workers", 2,
          message="--num-workers needs --engine ray")
    fails(corpus, tmp_path / "in", "--model", MODEL,
          message="is not empty and has no manifest.json")


def test_local_engine_never_imports_ray(tmp_path):
    corpus = tmp_path / "in.jsonl"
    corpus.write_text('{"id": 1, "text": "one"}\n')
    code = ("import sys; from mosaic_encoder.cli import main; status = main(sys.argv[1:]); "
            "assert 'ray' not in sys.modules, 'ray was imported'; sys.exit(status)")
    result = subprocess.run([sys.executable, "-c", code, "embed-corpus", str(corpus),
                             str(tmp_path / "out"), "--model", str(MODEL)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_a_rerun_recomputes_the_shards_it_cannot_prove(tmp_path, texts, reference, run):
    corpus = make_corpus(tmp_path / "in", texts)
    out, other = tmp_path / "out", tmp_path / "other"
    args = ["--rows-per-shard", 4, "--max-tokens", 96]
    assert run(corpus, out, "--model", MODEL, *args)[0] == 0
    assert run(corpus, other, "--model", WEIGHTS / "mosaic-tiny-mlm", *args)[0] == 0
    # A flipped byte in one shard, another model's file for the same rows in place of another.
    flipped = out / "part-00000-000001.parquet"
    data = bytearray(flipped.read_bytes())
    data[len(data) // 2] ^= 0x10
    flipped.write_bytes(bytes(data))
    (out / "part-00001-000000.parquet").write_bytes(
        (other / "part-00001-000000.parquet").read_bytes())
    status, _, stderr = run(corpus, out, "--model", MODEL, *args)
    assert status == 0, stderr
    assert "into 2 shard(s)" in stderr and "2 shard file(s) did not match and were replaced" \
        in stderr
    ids, embeddings = read_embeddings(out)
    np.testing.assert_allclose(embeddings, reference[ids], rtol=0, atol=1e-6)


def test_a_rerun_after_the_input_was_edited_recomputes_the_stale_shard(tmp_path, texts, run):
    """A row edited after a complete run: its shard no longer proves against the new input, is
    embedded again, and the run completes (the previous manifest's digest of the old file is
    no reason to call the new one missing)."""
    corpus = make_corpus(tmp_path / "in", texts)
    out = tmp_path / "out"
    args = ["--model", MODEL, "--rows-per-shard", 4, "--max-tokens", 96]
    assert run(corpus, out, *args)[0] == 0
    lines = (corpus / "part-a.jsonl").read_text(encoding="utf-8").splitlines()
    lines[1] = json.dumps({"id": 1, "text": "an edited second row"})
    (corpus / "part-a.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    status, _, stderr = run(corpus, out, *args)
    assert status == 0, stderr
    assert "into 1 shard(s)" in stderr and "1 shard file(s) did not match and were replaced" \
        in stderr
    edited = texts[:1] + ["an edited second row"] + texts[2:]
    ids, embeddings = read_embeddings(out)
    np.testing.assert_allclose(embeddings, SentenceEncoder(MODEL).encode(edited)[ids], rtol=0,
                               atol=1e-6)
    assert json.loads((out / "manifest.json").read_text())["complete"] is True


def test_non_finite_embeddings_fail_and_leave_nothing(tmp_path, run):
    from helpers import copy_checkpoint

    def overflow(tensors):
        # Finite weights whose activations overflow float32: NaN embeddings, which encode refuses.
        tensors["embeddings.LayerNorm.weight"].fill_(1e38)

    model = copy_checkpoint(tmp_path, tensors=overflow)
    corpus = tmp_path / "in.jsonl"
    corpus.write_text('{"id": 7, "text": "one"}\n')
    status, stdout, stderr = run(corpus, tmp_path / "out", "--model", model)
    assert status == 1 and stdout == "" and len(stderr.strip().splitlines()) == 1
    assert "shard part-00000-000000: 1 of 1 embeddings are not finite (NaN or Inf; the first " \
           "is id 7)" in stderr
    assert not (tmp_path / "out").exists()


def test_an_id_beyond_int64_is_refused_before_the_model_loads(tmp_path, run, monkeypatch):
    from mosaic_encoder.corpus.settings import CorpusSettings

    def never(self):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(CorpusSettings, "encoder", never)
    corpus = tmp_path / "in.jsonl"
    corpus.write_text('{"id": 1, "text": "one"}\n{"id": %d, "text": "two"}\n' % 2**70)
    status, _, stderr = run(corpus, tmp_path / "out", "--model", MODEL)
    assert status == 1 and "line 2 has an integer id outside the 64-bit range" in stderr
    assert not (tmp_path / "out").exists()


def test_concurrent_runs_end_identical_to_a_fresh_one(tmp_path, texts):
    corpus = make_corpus(tmp_path / "in", texts[:12])
    args = ["--model", MODEL, "--rows-per-shard", 2]
    env = dict(os.environ, PYTHONIOENCODING="utf-8")
    both = [subprocess.Popen([sys.executable, "-m", "mosaic_encoder", "embed-corpus", str(corpus),
                              str(tmp_path / "shared"), *map(str, args)], env=env,
                             stderr=subprocess.PIPE, text=True) for _ in range(2)]
    assert [process.wait() for process in both] == [0, 0], [p.stderr.read() for p in both]
    assert embed_corpus(corpus, tmp_path / "fresh", *args).returncode == 0

    def files(directory):
        return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}

    # Byte for byte: every shard, and the manifest with each shard's digests.
    assert files(tmp_path / "shared") == files(tmp_path / "fresh")
