"""Data files (jsonl, parquet; pairs, triplets) and the batch schedule."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, strategies as st

from mosaic_encoder.errors import InputError
from mosaic_encoder.training.data import Batch, BatchSchedule, read_pair_file

from helpers import pairs, write_jsonl


def test_jsonl_objects_and_arrays(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"anchor": "a1", "positive": "p1"}\n\n["a2", "p2"]\n', encoding="utf-8")
    data = read_pair_file(path)
    assert (data.anchors, data.positives, data.negatives) == (["a1", "a2"], ["p1", "p2"], None)


def test_triplets(tmp_path):
    data = read_pair_file(write_jsonl(tmp_path / "t.jsonl", pairs(3, negatives=True)))
    assert len(data) == 3 and data.negatives is not None
    assert data.take([2, 0])[2] == [data.negatives[2], data.negatives[0]]


def test_parquet(tmp_path):
    rows = pairs(5, negatives=True)
    table = pa.table({c: [r[c] for r in rows] for c in ("anchor", "positive", "negative")})
    pq.write_table(table, tmp_path / "d.parquet")
    data = read_pair_file(tmp_path / "d.parquet")
    assert data.anchors == [r["anchor"] for r in rows]
    assert data.negatives == [r["negative"] for r in rows]


@pytest.mark.parametrize("content, message", [
    (b"", "holds no examples"),
    (b"\n\n", "holds no examples"),
    (b'{"anchor": "a", "positive": "p"}\n{"anchor": "b"}\n',
     "line 2 has no string field 'positive'"),
    (b'{"anchor": "a", "positive": 3}\n', "line 1 has no string field 'positive'"),
    (b'{"anchor": "a", "positive": "p"\n', "line 1 is not valid JSON"),
    (b'{"anchor": "\xff\xfe", "positive": "p"}\n', "is not UTF-8 text"),
    (b'["a"]\n', "not of 2 or 3 strings"),
    (b'["a", "p"]\n["b", "q", "n"]\n', "mixes pairs and triplets"),
])
def test_bad_jsonl(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    with pytest.raises(InputError, match=message) as info:
        read_pair_file(path)
    assert str(path) in str(info.value)


def test_bad_parquet(tmp_path):
    pq.write_table(pa.table({"anchor": ["a"], "answer": ["p"]}), tmp_path / "d.parquet")
    with pytest.raises(InputError, match="has no column 'positive'"):
        read_pair_file(tmp_path / "d.parquet")
    pq.write_table(pa.table({"anchor": ["a"], "positive": [1]}), tmp_path / "n.parquet")
    with pytest.raises(InputError, match="column 'positive' holds int64"):
        read_pair_file(tmp_path / "n.parquet")
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(InputError, match="not a readable Parquet file"):
        read_pair_file(tmp_path / "junk.parquet")


def test_missing_file_and_suffix(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_pair_file(tmp_path / "none.jsonl")
    with pytest.raises(InputError, match="must end in .jsonl or .parquet"):
        read_pair_file(tmp_path / "data.csv")


def test_batch_larger_than_a_file(tmp_path):
    small = read_pair_file(write_jsonl(tmp_path / "small.jsonl", pairs(5)))
    with pytest.raises(InputError, match="small.jsonl holds 5 examples, fewer than the batch "
                                         "size 8"):
        BatchSchedule([small], batch_size=8, seed=0)


def test_schedule_one_file_per_batch_in_proportion(tmp_path):
    files = [read_pair_file(write_jsonl(tmp_path / f"{n}.jsonl", pairs(n, prefix=str(n))))
             for n in (40, 100, 13)]
    schedule = BatchSchedule(files, batch_size=4, seed=7)
    epoch = schedule.epoch(0)
    assert schedule.steps_per_epoch == len(epoch) == 10 + 25 + 3
    assert [sum(b.file == f for b in epoch) for f in range(3)] == [10, 25, 3]
    for batch in epoch:
        assert len(batch.indices) == 4 and max(batch.indices) < len(files[batch.file])
    for f in range(3):  # no example twice in an epoch
        used = [i for b in epoch if b.file == f for i in b.indices]
        assert len(used) == len(set(used))
    assert schedule.epoch(1) != epoch
    assert BatchSchedule(files, batch_size=4, seed=7).epoch(1) == schedule.epoch(1)
    assert schedule.batch(schedule.steps_per_epoch + 2) == schedule.epoch(1)[2]


@given(st.integers(1, 4).map(lambda k: 2 ** k), st.integers(1, 8), st.integers(0, 3))
def test_ranks_slice_the_same_global_batch(world_size, per_rank, rank_seed):
    batch = Batch(0, list(range(100, 100 + world_size * per_rank)))
    shards = [batch.shard(rank, world_size) for rank in range(world_size)]
    assert sum(shards, []) == batch.indices
    assert all(len(s) == per_rank for s in shards)


@pytest.mark.parametrize("content, message", [
    (b'{"anchor": "a", "positive": "p", "n": ' + b"9" * 5000 + b"}\n",
     "line 1 holds a number too large to read"),
    (b'{"anchor": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n",
     "line 1 nests JSON values too deeply"),
    (b'{"anchor": "a", "positive": "\xe2\x80\xa8"}\n["b", "p"]\n', None),  # U+2028 is no line break
])
def test_hostile_jsonl(tmp_path, content, message):
    path = tmp_path / "d.jsonl"
    path.write_bytes(content)
    if message is None:
        assert read_pair_file(path).positives == ["\u2028", "p"]
        return
    with pytest.raises(InputError, match=message) as info:
        read_pair_file(path)
    assert "\n" not in str(info.value) and len(str(info.value)) < 300


def test_devices_and_fifos_are_refused_without_blocking(tmp_path):
    import os

    os.mkfifo(tmp_path / "fifo.jsonl")
    with pytest.raises(InputError, match="data file .*fifo.jsonl is not a regular file"):
        read_pair_file(tmp_path / "fifo.jsonl")
    os.symlink("/dev/zero", tmp_path / "zero.jsonl")
    with pytest.raises(InputError, match="zero.jsonl is not a regular file"):
        read_pair_file(tmp_path / "zero.jsonl")


def test_a_null_in_parquet_is_named_by_row(tmp_path):
    pq.write_table(pa.table({"anchor": ["a", "b"], "positive": ["p", None]}), tmp_path / "d.parquet")
    with pytest.raises(InputError, match="d.parquet row 1 has a null 'positive'"):
        read_pair_file(tmp_path / "d.parquet")
