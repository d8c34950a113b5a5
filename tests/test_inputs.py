"""The readers every command shares: paths, lines, JSON, JSON lines, texts, documents, Parquet."""

import io
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mosaic_encoder.errors import CheckpointError, InputError
from mosaic_encoder.inputs import (MAX_LINE_BYTES, MAX_TEXTS, documents, input_file,
                                   parquet_columns, parse_json, read_json_lines, read_lines,
                                   read_texts, record_field)


def one_sentence(error: Exception) -> str:
    message = str(error)
    assert "\n" not in message and message.endswith(".") and len(message) < 300
    return message


# --- paths ------------------------------------------------------------------------------------


def test_a_fifo_is_refused_without_blocking_unless_a_pipe_is_allowed(tmp_path):
    fifo = tmp_path / "in.jsonl"
    os.mkfifo(fifo)
    with pytest.raises(InputError) as info:
        input_file(fifo, "data file")
    assert "is not a regular file (a device, FIFO or socket)" in one_sentence(info.value)
    assert input_file(fifo, pipe=True) == fifo


@pytest.mark.parametrize("pipe", [False, True])
def test_devices_directories_and_missing_files(tmp_path, pipe):
    with pytest.raises(InputError, match="/dev/zero is not a regular file"):
        input_file("/dev/zero", pipe=pipe)
    with pytest.raises(InputError, match="is a directory"):
        input_file(tmp_path, pipe=pipe)
    with pytest.raises(InputError, match="input file .*nope.txt does not exist"):
        input_file(tmp_path / "nope.txt", pipe=pipe)
    with pytest.raises(InputError, match=r"^input file 'a\\x00b' cannot be read \(it holds a NUL "
                                         r"byte\)\.$"):
        input_file("a\0b")


# --- lines ------------------------------------------------------------------------------------


def lines_of(data: bytes, **options):
    return [(line.where, line.offset, line.text)
            for line in read_lines(io.BytesIO(data), "input file f", **options)]


def test_lines_split_at_newline_only():
    data = "\ufeffa\r\nb\u2028c\n\nlast\r".encode()
    assert lines_of(data) == [("input file f line 1", 0, "a"),
                              ("input file f line 2", 6, "b\u2028c"),
                              ("input file f line 3", 12, ""), ("input file f line 4", 13, "last")]


def test_lines_from_an_offset_are_named_by_byte():
    stream = io.BytesIO(b"one\ntwo\nthree")
    stream.seek(4)
    assert [(line.where, line.text) for line in read_lines(stream, "input file f", offset=4)] == \
        [("input file f at byte 4", "two"), ("input file f at byte 8", "three")]


@given(st.lists(st.text(st.characters(blacklist_characters="\n\r\ufeff",
                                      blacklist_categories=("Cs",))), min_size=1),
       st.booleans(), st.booleans())
def test_lines_round_trip(texts, crlf, final_newline):
    end = "\r\n" if crlf else "\n"
    data = end.join(texts) + (end if final_newline else "")
    expected = texts if final_newline or texts[-1] else texts[:-1]
    assert [text for _, _, text in lines_of(data.encode())] == expected


def test_non_utf8_is_named_by_line_and_byte():
    with pytest.raises(InputError) as info:
        lines_of(b"fine\ncaf\xe9\n")
    assert one_sentence(info.value) == \
        "input file f line 2 is not UTF-8 text (invalid continuation byte at byte 8)."


def test_a_line_longer_than_the_cap_is_refused():
    fits = b"x" * MAX_LINE_BYTES + b"\n"
    assert len(lines_of(fits)[0][2]) == MAX_LINE_BYTES
    with pytest.raises(InputError) as info:
        lines_of(b"x" * (MAX_LINE_BYTES + 1))
    assert "line 1 is longer than 16 MiB" in one_sentence(info.value)


def test_the_total_cap():
    assert len(lines_of(b"ab\n" * 4, limit=12)) == 4
    with pytest.raises(InputError) as info:
        lines_of(b"ab\n" * 5, limit=12)
    assert one_sentence(info.value).startswith("input file f holds more than")


# --- JSON -------------------------------------------------------------------------------------


@pytest.mark.parametrize("data, message", [
    ('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}", "nests JSON values too deeply"),
    ('{"id": ' + "9" * 5000 + "}", "holds a number too large to read"),
    ('{"a": 1', "is not valid JSON (Expecting ',' delimiter at character 7)"),
    (b'"caf\xe9"', "is not UTF-8 text"),
])
def test_json_failures_are_one_sentence(data, message):
    with pytest.raises(InputError) as info:
        parse_json(data, "log file l.jsonl line 3")
    assert one_sentence(info.value).startswith("log file l.jsonl line 3 ")
    assert message in str(info.value)


def test_json_error_class_is_the_callers():
    with pytest.raises(CheckpointError, match="config file c nests JSON values too deeply"):
        parse_json("[" * 100_000, "config file c", CheckpointError)
    assert parse_json(b'{"a": [1, 2.5, "x"]}', "f") == {"a": [1, 2.5, "x"]}


def test_json_lines_of_a_file(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text('{"step": 1}\n\n[2]\n{"step": ' + "7" * 5000 + "}\n")
    records = read_json_lines(path, "log file")
    assert [(line.where.split()[-1], value) for line, value in
            [next(records), next(records)]] == [("1", {"step": 1}), ("3", [2])]
    with pytest.raises(InputError, match=r"log file .*log.jsonl line 4 holds a number too large"):
        next(records)
    os.mkfifo(tmp_path / "fifo.jsonl")
    with pytest.raises(InputError, match="not a regular file"):
        next(read_json_lines(tmp_path / "fifo.jsonl", "log file"))


def test_record_fields():
    assert record_field({"text": "a"}, "text", "w") == "a"
    assert record_field({"id": 3}, "id", "w", string=False) == 3
    for record, message in [
            ([1], "w is not a JSON object."),
            ({}, "w has no string field 'text' (choose it with --field)."),
            ({"text": None}, "w has no string field 'text' (it holds null; choose it with --field)."),
    ]:
        with pytest.raises(InputError) as info:
            record_field(record, "text", "w", "--field")
        assert str(info.value) == message
    with pytest.raises(InputError, match="^w has no field 'id'.$"):
        record_field({}, "id", "w", string=False)


# --- texts and documents ----------------------------------------------------------------------


def test_texts_keep_blank_lines_and_read_a_field():
    assert read_texts(io.BytesIO(b"a\n\nb\n"), "standard input") == ["a", "", "b"]
    data = b'{"body": "a"}\n\n{"body": "b"}\n'
    assert read_texts(io.BytesIO(data), "input file f.jsonl", "body") == ["a", "b"]


def test_texts_are_capped_in_number():
    assert len(read_texts(io.BytesIO(b"y\n" * MAX_TEXTS), "standard input")) == MAX_TEXTS
    with pytest.raises(InputError) as info:
        read_texts(io.BytesIO(b"y\n" * (MAX_TEXTS + 1)), "standard input")
    assert "standard input holds more than 1,000,000 texts" in one_sentence(info.value)


def test_documents_of_each_format(tmp_path):
    (tmp_path / "d.txt").write_text("one\n\n  \ntwo\r\n")
    (tmp_path / "d.jsonl").write_text('{"body": "one"}\n\n{"body": "two"}\n')
    pq.write_table(pa.table({"body": ["one", "two"]}), tmp_path / "d.parquet", row_group_size=1)
    for suffix in (".txt", ".jsonl", ".parquet"):
        assert list(documents(tmp_path / f"d{suffix}", "body")) == ["one", "two"]


def test_bad_documents(tmp_path):
    with pytest.raises(InputError, match="must end in .txt, .jsonl or .parquet"):
        list(documents(tmp_path / "d.csv"))
    (tmp_path / "d.jsonl").write_text('{"text": "one"}\n{"text": 2}\n')
    with pytest.raises(InputError, match="line 2 has no string field 'text' \\(it holds a number"):
        list(documents(tmp_path / "d.jsonl"))
    pq.write_table(pa.table({"text": ["one", None]}), tmp_path / "d.parquet")
    with pytest.raises(InputError, match="d.parquet row 1 has a null 'text'"):
        list(documents(tmp_path / "d.parquet"))
    pq.write_table(pa.table({"text": [1]}), tmp_path / "n.parquet")
    with pytest.raises(InputError, match="column 'text' holds int64, not strings"):
        list(documents(tmp_path / "n.parquet"))


# --- Parquet ----------------------------------------------------------------------------------


def test_parquet_columns_by_row_group(tmp_path):
    path = tmp_path / "c.parquet"
    pq.write_table(pa.table({"id": list(range(5)), "text": list("abcde")}), path, row_group_size=2)
    batches = list(parquet_columns(path, ["text", "id"], row_groups=[1, 2]))
    assert [value for texts, _ in batches for value in texts] == ["c", "d", "e"]
    assert [value for _, ids in batches for value in ids] == [2, 3, 4]


def test_bad_parquet(tmp_path):
    path = tmp_path / "c.parquet"
    pq.write_table(pa.table({"id": [1]}), path)
    with pytest.raises(InputError) as info:
        next(parquet_columns(path, ["id", "body"], flags={"body": "--text-column"}))
    assert one_sentence(info.value).endswith(
        "has no column 'body' (its columns: id; choose it with --text-column).")
    (tmp_path / "junk.parquet").write_bytes(b"PAR1 not parquet")
    with pytest.raises(InputError, match="junk.parquet is not a readable Parquet file"):
        next(parquet_columns(tmp_path / "junk.parquet", ["id"], "data file"))

