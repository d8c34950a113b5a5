"""The output directory: shard files, the manifest, and refusing a directory that is not ours."""

import hashlib
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers import WEIGHTS
from mosaic_encoder import CheckpointError, InputError
from mosaic_encoder.corpus.reading import scan_corpus
from mosaic_encoder.corpus.settings import CorpusSettings
from mosaic_encoder.corpus.shards import (OutputDirectory, input_identity, model_identity,
                                          read_embeddings, shard_stamp, write_shard)


@pytest.fixture
def setup(tmp_path):
    return shard_setup(tmp_path)


def shard_setup(tmp_path):
    """(corpus, OutputDirectory factory) for 5 string-id rows, 2 per shard."""
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps({"id": f"r{i}", "text": f"row {i}"}) + "\n"
                            for i in range(5)))
    settings = CorpusSettings(str(WEIGHTS / "mosaic-tiny"), rows_per_shard=2)
    corpus = scan_corpus(path, rows_per_shard=2)

    def directory(where=tmp_path / "out"):
        return OutputDirectory(where, model_identity(settings), input_identity(settings, corpus))

    return corpus, directory


def test_write_shard_round_trip(tmp_path):
    embeddings = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    path = tmp_path / "part-00000-000000.parquet"
    write_shard(path, ["a", "b", "c"], embeddings, "str", b"stamp")
    table = pq.read_table(path)
    assert table.schema == pa.schema([("id", pa.string()), ("embedding", pa.list_(pa.float32(), 4))],
                                     metadata={"mosaic-encoder": "stamp"})
    np.testing.assert_array_equal(
        table.column("embedding").combine_chunks().flatten().to_numpy().reshape(3, 4), embeddings)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_lifecycle_and_read_back(setup):
    corpus, directory = setup
    output = directory()
    assert [s.name for s in output.check(corpus)] == [s.name for s in corpus.shards]
    output.start(corpus)
    manifest = json.loads((output.path / "manifest.json").read_text())
    assert not manifest["complete"] and manifest["rows"] == 5
    with pytest.raises(InputError, match="lacks 3 shard\\(s\\) after the run"):
        output.finish(corpus)
    for shard in corpus.shards:
        count = shard.stop - shard.start
        write_shard(output.shard_path(shard), [f"r{shard.start + i}" for i in range(count)],
                    np.full((count, 192), shard.start, np.float32), "str",
                    shard_stamp(shard, output.model_sha256))
    (output.path / ".part-00000-000001.parquet.abc123.tmp").write_bytes(b"half")
    assert directory().check(corpus) == []
    output.finish(corpus)
    assert sorted(p.name for p in output.path.iterdir()) == [
        "manifest.json", "part-00000-000000.parquet", "part-00000-000001.parquet",
        "part-00000-000002.parquet"]
    ids, embeddings = read_embeddings(output.path)
    assert ids == [f"r{i}" for i in range(5)]
    assert embeddings.shape == (5, 192) and embeddings[:, 0].tolist() == [0, 0, 2, 2, 4]


def test_foreign_directories_are_refused_without_changes(setup, tmp_path):
    corpus, directory = setup
    output = directory()
    output.start(corpus)
    (output.path / "manifest.json").write_text("{not json")
    with pytest.raises(InputError, match="manifest .* is not valid JSON"):
        directory().check(corpus)
    (output.path / "manifest.json").write_text('{"format": "mosaic-encoder embed-corpus 1"}')
    with pytest.raises(InputError, match="is not an embed-corpus manifest of this version "
                                         "\\(format 'mosaic-encoder embed-corpus 1'"):
        directory().check(corpus)
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(InputError, match="a-file is a file"):
        directory(tmp_path / "a-file").check(corpus)


def finished(setup, complete=True):
    """The output directory with every shard written (and the manifest complete if asked)."""
    corpus, directory = setup
    output = directory()
    output.start(corpus)
    for shard in corpus.shards:
        count = shard.stop - shard.start
        write_shard(output.shard_path(shard), [f"r{shard.start + i}" for i in range(count)],
                    np.full((count, 192), 0.1 * shard.start, np.float32), "str",
                    shard_stamp(shard, output.model_sha256))
    if complete:
        output.finish(corpus)
    return corpus, output


def test_the_manifest_records_each_shards_digests(setup):
    corpus, output = finished(setup)
    manifest = json.loads((output.path / "manifest.json").read_text())
    assert manifest["model_sha256"] == output.model_sha256
    for shard, entry in zip(corpus.shards, manifest["shards"]):
        assert entry["input_sha256"] == shard.sha256
        assert entry["sha256"] == hashlib.sha256(output.shard_path(shard).read_bytes()).hexdigest()
    assert setup[1]().check(corpus) == []


def another_model(output, shard):
    write_shard(output.shard_path(shard), ["r0", "r1"], np.zeros((2, 192), np.float32), "str",
                shard_stamp(shard, "0" * 64))


def wrong_width(output, shard):
    write_shard(output.shard_path(shard), ["r0", "r1"], np.zeros((2, 4), np.float32), "str",
                shard_stamp(shard, output.model_sha256))


def not_finite(output, shard):
    write_shard(output.shard_path(shard), ["r0", "r1"], np.full((2, 192), np.nan, np.float32),
                "str", shard_stamp(shard, output.model_sha256))


def wrong_rows(output, shard):
    write_shard(output.shard_path(shard), ["r0"], np.zeros((1, 192), np.float32), "str",
                shard_stamp(shard, output.model_sha256))


def other_values(output, shard):
    write_shard(output.shard_path(shard), ["r0", "r1"], np.ones((2, 192), np.float32), "str",
                shard_stamp(shard, output.model_sha256))


def a_fifo(output, shard):
    output.shard_path(shard).unlink()
    os.mkfifo(output.shard_path(shard))


@pytest.mark.parametrize("complete", [True, False])
@pytest.mark.parametrize("tamper", [another_model, wrong_width, not_finite, wrong_rows, a_fifo])
def test_a_shard_that_cannot_be_proven_is_recomputed(setup, complete, tamper):
    corpus, output = finished(setup, complete)
    tamper(output, corpus.shards[0])
    assert [s.name for s in setup[1]().check(corpus)] == [corpus.shards[0].name]


def test_a_rewritten_shard_is_caught_by_the_recorded_digest(setup):
    corpus, output = finished(setup)
    other_values(output, corpus.shards[0])  # a valid file, but not the one the run finished
    assert [s.name for s in setup[1]().check(corpus)] == [corpus.shards[0].name]


@given(position=st.integers(0, 10**9), bit=st.integers(0, 7))
def test_a_flipped_bit_anywhere_is_caught_without_a_recorded_digest(tmp_path_factory, position,
                                                                    bit):
    setup = shard_setup(tmp_path_factory.mktemp("flip"))
    corpus, output = finished(setup, complete=False)
    path = output.shard_path(corpus.shards[0])
    data = bytearray(path.read_bytes())
    data[position % len(data)] ^= 1 << bit
    path.write_bytes(bytes(data))
    assert [s.name for s in setup[1]().check(corpus)] == [corpus.shards[0].name]


def test_an_input_edited_in_place_recomputes_its_shard_only(setup, tmp_path):
    corpus, output = finished(setup)
    path = tmp_path / "in.jsonl"
    path.write_text(path.read_text().replace("row 3", "row 9"))  # same size, same row count
    edited = scan_corpus(path, rows_per_shard=2)
    again = OutputDirectory(output.path, output.model, output.input)
    assert [s.name for s in again.check(edited)] == [corpus.shards[1].name]


def test_abandon_removes_only_what_the_run_created(setup, tmp_path):
    corpus, directory = setup
    output = directory()
    output.start(corpus)
    output.abandon()
    assert not output.path.exists()
    corpus, output = finished(setup, complete=False)
    output.abandon()
    assert (output.path / "manifest.json").exists()


def test_the_model_identity_covers_the_tokenizer(tmp_path):
    from helpers import copy_checkpoint

    model = copy_checkpoint(tmp_path)
    before = model_identity(CorpusSettings(str(model)))
    tokenizer = json.loads((model / "tokenizer.json").read_text())
    vocab = tokenizer["model"]["vocab"]
    first, second = list(vocab)[1000:1002]
    vocab[first], vocab[second] = vocab[second], vocab[first]  # two token ids swapped
    (model / "tokenizer.json").write_text(json.dumps(tokenizer))
    after = model_identity(CorpusSettings(str(model)))
    assert before["weights_sha256"] == after["weights_sha256"]
    assert before["tokenizer_sha256"] != after["tokenizer_sha256"]
    os.mkfifo(model / "extra.safetensors")
    with pytest.raises(CheckpointError, match="extra.safetensors is not a regular file"):
        model_identity(CorpusSettings(str(model)))
