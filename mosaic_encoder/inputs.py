"""What the commands read: text lines, JSON values, JSON-lines records and Parquet columns.

Every command reads its text and records through this module, so every reader has the same
bounds and every failure the same one-sentence wording, naming the source and the line or row:

* a path is checked with ``stat`` before it is opened (:func:`input_file`): a directory, device
  (``/dev/zero``), socket or FIFO is refused without blocking. Only a text read once from front to
  back (``encode`` and ``fill-mask --input``) may come from a pipe, such as ``<(zcat a.gz)``;
* files are read as a stream of lines of at most :data:`MAX_LINE_BYTES` each, so memory follows
  the longest line, not the file; texts that are held in memory whole (those of ``encode``) are
  capped at :data:`MAX_TEXT_BYTES` and :data:`MAX_TEXTS`;
* lines split at ``\\n`` only (a ``\\r`` before it is dropped, a first-line BOM is skipped): a
  U+2028 inside a JSON string is no line break;
* JSON is parsed by :func:`parse_json`, which turns every failure Python's ``json`` can raise
  (``RecursionError`` on deep nesting, ``ValueError`` on integers past the conversion digit limit)
  into one sentence. Like ``json``, it reads ``NaN`` and ``Infinity`` (which ``json.dumps``
  writes): callers check the values they use;
* Parquet files are read in record batches of :data:`PARQUET_BATCH_ROWS` rows of the named columns.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Iterator

from .errors import InputError, MosaicError

MAX_LINE_BYTES = 16 << 20  # one line or record; a text is cut to a few thousand tokens anyway
MAX_TEXT_BYTES = 256 << 20  # texts held in memory at once, with their token ids
MAX_TEXTS = 1_000_000  # and their embeddings: 3 GB at 768 float32 each
PARQUET_BATCH_ROWS = 1024
DOCUMENT_SUFFIXES = (".txt", ".jsonl", ".parquet")


def input_file(path: str | Path, what: str = "input file", pipe: bool = False) -> Path:
    """``path`` after refusing anything but an existing regular file (or a pipe, with ``pipe``).

    ``stat`` does not open the file, so a FIFO or device is refused without blocking.
    """
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise InputError(f"{what} {path} does not exist.") from None
    except OSError as err:
        raise InputError(f"{what} {path} cannot be read ({err.strerror}).") from None
    except ValueError:  # the path holds a NUL byte, which would print raw
        raise InputError(f"{what} {str(path)!r} cannot be read (it holds a NUL byte).") from None
    if stat.S_ISDIR(mode):
        raise InputError(f"{what} {path} is a directory.")
    if stat.S_ISREG(mode) or (pipe and stat.S_ISFIFO(mode)):
        return path
    if pipe:
        raise InputError(f"{what} {path} is not a regular file or a pipe (a device or socket); "
                         f"pass a file, or pipe the text into standard input.")
    raise InputError(f"{what} {path} is not a regular file (a device, FIFO or socket); pass a "
                     f"file.")


@contextlib.contextmanager
def open_input(path: str | Path, what: str = "input file", pipe: bool = False
               ) -> Iterator[BinaryIO]:
    """The binary stream of :func:`input_file` ``(path, what, pipe)``, read errors as InputError."""
    path = input_file(path, what, pipe)
    try:
        stream = open(path, "rb")
    except OSError as err:
        raise InputError(f"{what} {path} cannot be read ({err.strerror}).") from None
    with stream:
        try:
            yield stream
        except OSError as err:
            raise InputError(f"{what} {path} cannot be read ({err.strerror or err}).") from None


def parse_json(data: str | bytes, source: str, error: type[MosaicError] = InputError) -> Any:
    """The JSON value in ``data``; any failure is one ``error`` sentence starting with ``source``.

    ``source`` names the file and, for JSON lines, the line (``"data file d.jsonl line 3"``).
    """
    try:
        if isinstance(data, bytes):
            data = data.decode("utf-8")
        return json.loads(data)
    except UnicodeDecodeError as err:
        raise error(f"{source} is not UTF-8 text ({err.reason} at byte {err.start}).") from None
    except json.JSONDecodeError as err:
        raise error(f"{source} is not valid JSON ({err.msg} at character {err.pos}).") from None
    except RecursionError:
        raise error(f"{source} nests JSON values too deeply.") from None
    except ValueError as err:  # integers beyond sys.get_int_max_str_digits()
        raise error(f"{source} holds a number too large to read ({str(err)[:80]}).") from None


@dataclass(frozen=True)
class Line:
    """A line of a stream: where it is (for messages), its byte offset, its text without ``\\n``."""

    where: str
    offset: int
    text: str


def read_lines(stream: BinaryIO, source: str, offset: int = 0,
               limit: int | None = None) -> Iterator[Line]:
    """The lines of ``stream`` from byte ``offset`` (the stream is positioned there already).

    Lines are named ``"{source} line N"``, or ``"{source} at byte B"`` when reading starts past
    the beginning. Refuses a line longer than :data:`MAX_LINE_BYTES`, text that is not UTF-8,
    and, with ``limit``, more than ``limit`` bytes in all.
    """
    number, position = 0, offset
    while True:
        raw = stream.readline(MAX_LINE_BYTES + 1)
        if not raw:
            return
        number += 1
        where = f"{source} line {number}" if not offset else f"{source} at byte {position}"
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            raise InputError(f"{where} is longer than {MAX_LINE_BYTES >> 20} MiB; split it, or "
                             f"check that this is a text file.")
        line_offset, position = position, position + len(raw)
        if limit is not None and position - offset > limit:
            raise InputError(f"{source} holds more than {limit >> 20} MiB of text; split it into "
                             f"smaller inputs.")
        try:
            text = raw.decode("utf-8-sig" if line_offset == 0 else "utf-8")
        except UnicodeDecodeError as err:
            raise InputError(f"{where} is not UTF-8 text ({err.reason} at byte "
                             f"{line_offset + err.start}).") from None
        text = text.removesuffix("\n").removesuffix("\r")
        yield Line(where, line_offset, text)


def json_lines(stream: BinaryIO, source: str, offset: int = 0,
               limit: int | None = None) -> Iterator[tuple[Line, Any]]:
    """(line, parsed value) for each non-blank line of a JSON-lines stream (see :func:`read_lines`).

    Blank lines separate no records and are skipped.
    """
    for line in read_lines(stream, source, offset, limit):
        if line.text.strip():
            yield line, parse_json(line.text, line.where)


def read_json_lines(path: str | Path, what: str) -> Iterator[tuple[Line, Any]]:
    """:func:`json_lines` of the regular file ``path`` (``what`` names it: ``"log file"``)."""
    with open_input(path, what) as stream:
        yield from json_lines(stream, f"{what} {path}")


def record_field(record: Any, name: str, where: str, flag: str | None = None,
                 string: bool = True) -> Any:
    """``record[name]`` of a JSON-lines record, refusing a record that is not an object, lacks the
    field, or (with ``string``) holds something else than a string there; ``flag`` is the option
    that chooses the field, named in the message."""
    if not isinstance(record, dict):
        raise InputError(f"{where} is not a JSON object.")
    choose = f"choose it with {flag}" if flag else ""
    kind = "string field" if string else "field"
    if name not in record:
        raise InputError(f"{where} has no {kind} {name!r}{f' ({choose})' if choose else ''}.")
    value = record[name]
    if string and not isinstance(value, str):
        raise InputError(f"{where} has no string field {name!r} (it holds {json_type(value)}"
                         f"{f'; {choose}' if choose else ''}).")
    return value


def json_type(value: Any) -> str:
    """``value``'s JSON type in words: ``"an object"``, ``"a number"``, ``"null"``, ..."""
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
             int: "a number", float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


# --- texts ------------------------------------------------------------------------------------


def read_texts(stream: BinaryIO, source: str, field: str | None = None) -> list[str]:
    """Every text of ``stream``, held in memory: at most :data:`MAX_TEXTS` texts and
    :data:`MAX_TEXT_BYTES` bytes.

    Without ``field``, one text per line and blank lines are kept (text i is line i); with
    ``field``, the stream is JSON lines and each record's string ``field`` is a text.
    """
    if field is None:
        texts = (line.text for line in read_lines(stream, source, limit=MAX_TEXT_BYTES))
    else:
        texts = (record_field(record, field, line.where, "--field")
                 for line, record in json_lines(stream, source, limit=MAX_TEXT_BYTES))
    kept = []
    for text in texts:
        if len(kept) == MAX_TEXTS:
            raise InputError(f"{source} holds more than {MAX_TEXTS:,} texts; split it, or use "
                             f"embed-corpus, which streams.")
        kept.append(text)
    return kept


def read_json_texts(stream: BinaryIO, source: str, field: str = "text") -> list[str]:
    """The texts of a ``.json`` stream: one JSON array whose items are texts (strings) or records
    (objects whose string ``field`` is the text), within :data:`MAX_TEXT_BYTES` and
    :data:`MAX_TEXTS`. Anything else (an object, a number, an array holding one) is refused, so
    that a file is never embedded as one literal text."""
    data = stream.read(MAX_TEXT_BYTES + 1)
    if len(data) > MAX_TEXT_BYTES:
        raise InputError(f"{source} holds more than {MAX_TEXT_BYTES >> 20} MiB of text; split it "
                         f"into smaller inputs.")
    value = parse_json(data.removeprefix(b"\xef\xbb\xbf"), source)
    if not isinstance(value, list):
        raise InputError(f"{source} must hold a JSON array of texts (strings, or records with a "
                         f"string field {field!r}), not {json_type(value)}.")
    if len(value) > MAX_TEXTS:
        raise InputError(f"{source} holds more than {MAX_TEXTS:,} texts; split it, or use "
                         f"embed-corpus, which streams.")
    texts = []
    for number, item in enumerate(value, start=1):
        where = f"{source} item {number}"
        if isinstance(item, dict):
            item = record_field(item, field, where, "--field")
        elif not isinstance(item, str):
            raise InputError(f"{where} is {json_type(item)}, not a text (a string) or a record "
                             f"(an object).")
        texts.append(item)
    return texts


def documents(path: str | Path, field: str = "text", what: str = "input file"
              ) -> Iterator[str]:
    """The documents of a ``.txt`` (one per non-blank line), ``.jsonl`` (string ``field`` of each
    record) or ``.parquet`` file (string column ``field``), streamed in file order."""
    path = Path(path)
    if path.suffix not in DOCUMENT_SUFFIXES:
        raise InputError(f"{what} {path} must end in {', '.join(DOCUMENT_SUFFIXES[:-1])} or "
                         f"{DOCUMENT_SUFFIXES[-1]}.")
    source = f"{what} {path}"
    if path.suffix == ".parquet":
        yield from (text for (text,) in string_rows(path, [field], what))
        return
    with open_input(path, what) as stream:
        if path.suffix == ".jsonl":
            for line, record in json_lines(stream, source):
                yield record_field(record, field, line.where)
        else:
            for line in read_lines(stream, source):
                if line.text.strip():
                    yield line.text


# --- Parquet ----------------------------------------------------------------------------------


def parquet_file(path: str | Path, what: str, columns: list[str],
                 flags: dict[str, str] | None = None, strings: bool = False):
    """The ``pyarrow.parquet.ParquetFile`` at ``path``, refusing it without every column of
    ``columns`` (``flags`` names the option choosing a column) or, with ``strings``, when one of
    them does not hold strings."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = input_file(path, what)
    try:
        parquet = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as err:
        raise InputError(f"{what} {path} is not a readable Parquet file ({err}).") from None
    schema = parquet.schema_arrow
    for column in columns:
        if column not in schema.names:
            choose = f"; choose it with {flags[column]}" if flags and column in flags else ""
            raise InputError(f"{what} {path} has no column {column!r} (its columns: "
                             f"{', '.join(schema.names) or 'none'}{choose}).")
        kind = schema.field(column).type
        if strings and not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
            raise InputError(f"{what} {path} column {column!r} holds {kind}, not strings.")
    return parquet


def parquet_columns(path: str | Path, columns: list[str], what: str = "input file",
                    flags: dict[str, str] | None = None, strings: bool = False,
                    row_groups: list[int] | None = None) -> Iterator[list[list]]:
    """The values of ``columns`` (one list per column) for each record batch of a Parquet file,
    from the row groups ``row_groups`` (default: all); see :func:`parquet_file`."""
    import pyarrow as pa

    parquet = parquet_file(path, what, columns, flags, strings)
    groups = range(parquet.num_row_groups) if row_groups is None else row_groups
    try:
        for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS, row_groups=list(groups),
                                          columns=columns):
            yield [batch.column(i).to_pylist() for i in range(len(columns))]
    except (OSError, pa.ArrowException) as err:
        raise InputError(f"{what} {path} is not a readable Parquet file ({err}).") from None


def string_rows(path: str | Path, columns: list[str], what: str = "input file"
                ) -> Iterator[tuple[str, ...]]:
    """The rows of string ``columns`` of a Parquet file as tuples, refusing a null (rows are
    counted from 0, as Parquet does)."""
    row = 0
    for values in parquet_columns(path, columns, what, strings=True):
        for texts in zip(*values):
            if None in texts:
                raise InputError(f"{what} {path} row {row} has a null "
                                 f"{columns[texts.index(None)]!r}.")
            row += 1
            yield texts
