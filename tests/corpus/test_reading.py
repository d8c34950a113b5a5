"""Input scanning, shard assignment and per-shard reads of .jsonl and .parquet corpora."""

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mosaic_encoder import InputError
from mosaic_encoder.corpus.reading import read_shard, scan_corpus, text_problem


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def write_parquet(path, ids, texts, row_group_size=None):
    pq.write_table(pa.table({"id": ids, "text": texts}), path, row_group_size=row_group_size)
    return path


def test_text_problem():
    assert text_problem("a text") is None
    assert text_problem("") == "empty" and text_problem("  \n") == "empty"
    assert text_problem(None) == "missing (null)"
    assert text_problem(3) == "not a string (int)"
    assert text_problem(json.loads('"bad \\ud800 half"')) == "not valid Unicode (lone surrogate)"


def test_scan_fixes_shards_and_bad_rows(tmp_path):
    records = [{"id": i, "text": f"text {i}"} for i in range(7)]
    records[2]["text"] = ""
    records[5]["text"] = 17
    write_jsonl(tmp_path / "a.jsonl", records)
    write_parquet(tmp_path / "b.parquet", ["x", "y"], ["one", None])
    with pytest.raises(InputError, match="b.parquet row 0 has a str id but earlier rows have int"):
        scan_corpus(tmp_path, rows_per_shard=3)
    (tmp_path / "b.parquet").unlink()
    write_parquet(tmp_path / "b.parquet", [10, 11], ["one", None])
    corpus = scan_corpus(tmp_path, rows_per_shard=3)
    assert [(s.name, s.start, s.stop, s.embedded) for s in corpus.shards] == [
        ("part-00000-000000", 0, 3, 2), ("part-00000-000001", 3, 6, 2),
        ("part-00000-000002", 6, 7, 1), ("part-00001-000000", 0, 2, 1)]
    assert [(b.id, b.file, b.row, b.reason) for b in corpus.bad_rows] == [
        (2, "a.jsonl", 2, "empty"), (5, "a.jsonl", 5, "not a string (int)"),
        (11, "b.parquet", 1, "missing (null)")]
    assert corpus.rows == 9 and corpus.id_type == "int"
    assert [f["rows"] for f in corpus.files] == [7, 2]


@given(rows=st.integers(0, 23), rows_per_shard=st.integers(1, 9), group=st.integers(1, 7),
       blank_lines=st.booleans())
def test_shards_read_back_every_row_once(tmp_path_factory, rows, rows_per_shard, group,
                                         blank_lines):
    directory = tmp_path_factory.mktemp("corpus")
    ids = [f"doc-{i}" for i in range(rows)]
    texts = [f"text number {i} " + "é" * i for i in range(rows)]
    lines = "".join(json.dumps({"id": i, "text": t}) + ("\n\n" if blank_lines else "\n")
                    for i, t in zip(ids, texts))
    (directory / "a.jsonl").write_text(lines, encoding="utf-8")
    other_ids = [f"other-{i}" for i in range(rows)]
    write_parquet(directory / "b.parquet", other_ids, texts[::-1], row_group_size=group)
    corpus = scan_corpus(directory, rows_per_shard=rows_per_shard)
    read = {"a.jsonl": ([], []), "b.parquet": ([], [])}
    for shard in corpus.shards:
        shard_ids, shard_texts = read_shard(shard, "text", "id")
        assert len(shard_ids) == shard.stop - shard.start <= rows_per_shard
        name = "a.jsonl" if shard.format == "jsonl" else "b.parquet"
        read[name][0].extend(shard_ids)
        read[name][1].extend(shard_texts)
    assert read["a.jsonl"] == (ids, texts)
    assert read["b.parquet"] == (other_ids, texts[::-1])


@pytest.mark.parametrize("content, message", [
    (b'{"id": 1, "text": "fine"}\n{"id": 2, "text": "caf\xe9"}\n', "line 2 is not UTF-8"),
    (b'{"id": 1, "text": "fine"}\n{"id": 2, "text": \n', "line 2 is not valid JSON"),
    (b'[1, 2]\n', "line 1 is not a JSON object"),
    (b'{"id": 1, "body": "no text"}\n', "line 1 has no field 'text' \\(choose it with "
                                         "--text-column\\)"),
    (b'{"text": "no id"}\n', "line 1 has no field 'id'"),
    (b'{"id": 1.5, "text": "float id"}\n', "line 1 has a float id"),
    (b'{"id": null, "text": "null id"}\n', "line 1 has no id"),
    (b'{"id": 1, "text": "a"}\n{"id": 1, "text": "b"}\n', "line 2 repeats id 1"),
])
def test_bad_jsonl_is_one_clear_error(tmp_path, content, message):
    path = tmp_path / "corpus.jsonl"
    path.write_bytes(content)
    with pytest.raises(InputError, match=message):
        scan_corpus(path)


def test_bad_parquet_and_paths_are_clear_errors(tmp_path):
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(InputError, match="broken.parquet is not a readable Parquet file"):
        scan_corpus(broken)
    good = write_parquet(tmp_path / "good.parquet", [1], ["a"])
    with pytest.raises(InputError, match="has no column 'body' \\(its columns: id, text; choose "
                                         "it with --text-column\\)"):
        scan_corpus(good, text_column="body")
    with pytest.raises(InputError, match="does not exist"):
        scan_corpus(tmp_path / "missing.jsonl")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="must end in .jsonl or .parquet"):
        scan_corpus(tmp_path / "notes.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no .jsonl or .parquet files"):
        scan_corpus(tmp_path / "empty")


def test_changed_input_is_detected_when_a_shard_is_read(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [{"id": i, "text": "t"} for i in range(4)])
    shard = scan_corpus(path, rows_per_shard=4).shards[0]
    write_jsonl(path, [{"id": 0, "text": "t"}])
    with pytest.raises(InputError, match="changed since it was scanned"):
        read_shard(shard, "text", "id")


@pytest.mark.parametrize("line, message", [
    ('{"id": ' + "9" * 5000 + ', "text": "a"}', "line 1 holds a number too large to read"),
    ('{"id": 1, "text": ' + "[" * 100_000 + "]" * 100_000 + "}",
     "line 1 nests JSON values too deeply"),
    ('{"id": ' + str(2**70) + ', "text": "a"}',
     "line 1 has an integer id outside the 64-bit range \\(a 71-bit integer\\)"),
    ('{"id": ' + str(-2**63 - 1) + ', "text": "a"}', "outside the 64-bit range \\(-9223372036"),
])
def test_hostile_rows_are_refused_by_the_scan(tmp_path, line, message):
    path = tmp_path / "corpus.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(InputError, match=message) as info:
        scan_corpus(path)
    assert "\n" not in str(info.value) and len(str(info.value)) < 300


def test_devices_and_fifos_are_refused_without_blocking(tmp_path):
    with pytest.raises(InputError, match="/dev/zero is not a regular file"):
        scan_corpus("/dev/zero")
    os.mkfifo(tmp_path / "a.jsonl")
    write_jsonl(tmp_path / "b.jsonl", [{"id": 1, "text": "a"}])
    with pytest.raises(InputError, match="a.jsonl is not a regular file"):
        scan_corpus(tmp_path)
    with pytest.raises(InputError, match="a.jsonl is not a regular file"):
        scan_corpus(tmp_path / "a.jsonl")


def test_an_edit_in_place_is_detected_by_the_shard_digest(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [{"id": i, "text": "abc"} for i in range(4)])
    shard = scan_corpus(path, rows_per_shard=4).shards[0]
    write_jsonl(path, [{"id": i, "text": "abd"} for i in range(4)])  # same size, same rows
    with pytest.raises(InputError, match="changed since it was scanned"):
        read_shard(shard, "text", "id")
    assert scan_corpus(path, rows_per_shard=4).shards[0].sha256 != shard.sha256
