"""The output directory: shard files, the manifest, and refusing a directory that is not ours."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import WEIGHTS
from mosaic_encoder import InputError
from mosaic_encoder.corpus.reading import scan_corpus
from mosaic_encoder.corpus.settings import CorpusSettings
from mosaic_encoder.corpus.shards import (OutputDirectory, input_identity, model_identity,
                                          read_embeddings, write_shard)


@pytest.fixture
def setup(tmp_path):
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
    write_shard(path, ["a", "b", "c"], embeddings, "str")
    table = pq.read_table(path)
    assert table.schema == pa.schema([("id", pa.string()), ("embedding", pa.list_(pa.float32(), 4))])
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
                    np.full((count, 192), shard.start, np.float32), "str")
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
    write_shard(output.shard_path(corpus.shards[0]), ["r0"], np.zeros((1, 192), np.float32), "str")
    with pytest.raises(InputError, match="holds 1 rows where this input gives 2; it was not "
                                         "written by this command"):
        directory().check(corpus)
    (output.path / "manifest.json").write_text("{not json")
    with pytest.raises(InputError, match="is not an embed-corpus manifest"):
        directory().check(corpus)
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(InputError, match="a-file is a file"):
        directory(tmp_path / "a-file").check(corpus)
