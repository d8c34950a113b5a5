"""The corpus input: ``.jsonl`` / ``.parquet`` files of (id, text) rows, scanned once before any work.

:func:`scan_corpus` reads every input file in full before a model is loaded, so that every input
error (a missing column, a line that is not UTF-8 JSON, an unreadable Parquet file, a missing or
duplicated id) is one :class:`InputError` raised before anything is computed or written. The scan
also fixes the shards: each file is cut into consecutive row ranges of ``rows_per_shard`` rows, so
the shard assignment depends on the input alone and a rerun finds the same shards.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

from ..errors import InputError
from ..files import short
from ..inputs import (input_file, json_lines, open_input, parquet_columns, parquet_file,
                      record_field)

FORMATS = {".jsonl": "jsonl", ".parquet": "parquet"}


@dataclass(frozen=True)
class Shard:
    """Rows ``start`` to ``stop`` (exclusive) of one input file, written as one output file.

    ``offset`` is the byte offset of row ``start`` in a JSON-lines file (0 for Parquet), so a worker
    reads its rows without scanning the file from the beginning; ``embedded`` counts the rows whose
    text is a non-empty string, i.e. the rows the shard's output file holds; ``sha256`` is the
    digest of its (id, text) rows, bad rows included.
    """

    name: str
    path: str
    format: str
    start: int
    stop: int
    offset: int
    embedded: int
    sha256: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class BadRow:
    """A row that is kept out of the embeddings: its text is empty or not a string."""

    id: int | str
    file: str
    row: int
    reason: str


@dataclass
class Corpus:
    """What the scan found: input files (name, rows), shards, bad rows and the id type."""

    root: Path
    files: list[dict[str, Any]] = field(default_factory=list)
    shards: list[Shard] = field(default_factory=list)
    bad_rows: list[BadRow] = field(default_factory=list)
    id_type: str | None = None  # "int" or "str"; None for an input without rows

    @property
    def rows(self) -> int:
        return sum(f["rows"] for f in self.files)


def text_problem(text: object) -> str | None:
    """Why ``text`` cannot be embedded (``"empty"``, ``"not a string (int)"``), or None if it can."""
    if not isinstance(text, str):
        return "missing (null)" if text is None else f"not a string ({type(text).__name__})"
    if not text.strip():
        return "empty"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # JSON can spell lone surrogates ("\ud800"), which no tokenizer accepts.
        return "not valid Unicode (lone surrogate)"
    return None


def find_inputs(path: Path) -> list[Path]:
    """The input files: ``path`` itself, or the ``.jsonl``/``.parquet`` files of a directory (sorted).

    Every one must be a regular file (:func:`~mosaic_encoder.inputs.input_file`): the scan and the
    workers read it again, which a FIFO cannot do.
    """
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in FORMATS
                       and not p.name.startswith("."))
        if not files:
            raise InputError(f"input directory {path} holds no .jsonl or .parquet files.")
        return [input_file(file) for file in files]
    input_file(path)
    if path.suffix not in FORMATS:
        raise InputError(f"input file {path} must end in .jsonl or .parquet.")
    return [path]


def scan_corpus(path: str | Path, text_column: str = "text", id_column: str = "id",
                rows_per_shard: int = 1000) -> Corpus:
    """Read and check every row of the input and cut each file into shards of ``rows_per_shard``.

    Shard names are ``part-FFFFF-SSSSSS`` (file number in sorted order, shard number in the file).
    Raises :class:`InputError` naming the file (and line or row) at fault.
    """
    if rows_per_shard < 1:
        raise InputError(f"rows per shard must be at least 1, got {rows_per_shard}.")
    root = Path(path)
    files = find_inputs(root)
    corpus = Corpus(root)
    seen: set[int | str] = set()
    for number, file in enumerate(files):
        format = FORMATS[file.suffix]
        reader = _jsonl_rows if format == "jsonl" else _parquet_rows
        rows = embedded = first_offset = 0
        digest = hashlib.sha256()
        for id, text, where, offset in reader(file, text_column, id_column):
            if rows % rows_per_shard == 0:
                if rows:
                    corpus.shards.append(_shard(number, file, format, rows, rows_per_shard,
                                                first_offset, embedded, digest))
                first_offset, embedded, digest = offset, 0, hashlib.sha256()
            corpus.id_type = _check_id(id, where, corpus.id_type, id_column)
            if id in seen:
                raise InputError(f"{where} repeats id {short(id, quote=True)}; every id must be "
                                 f"unique.")
            seen.add(id)
            digest.update(_row_bytes(id, text))
            problem = text_problem(text)
            if problem is None:
                embedded += 1
            else:
                corpus.bad_rows.append(BadRow(id, file.name, rows, problem))
            rows += 1
        if rows:
            corpus.shards.append(_shard(number, file, format, rows, rows_per_shard, first_offset,
                                        embedded, digest))
        corpus.files.append({"name": file.name, "rows": rows})
    return corpus


def _shard(number: int, file: Path, format: str, rows: int, rows_per_shard: int, offset: int,
           embedded: int, digest) -> Shard:
    """The shard holding the last rows read so far (``rows`` of them in the file)."""
    index = (rows - 1) // rows_per_shard
    return Shard(f"part-{number:05d}-{index:06d}", str(file.resolve()), format,
                 index * rows_per_shard, rows, offset, embedded, digest.hexdigest())


def _row_bytes(id: int | str, text: Any) -> bytes:
    """One row as the shard digest sees it: ``repr`` tells every id and text value apart (a string
    from a number, lone surrogates escaped), and a newline ends it."""
    return (repr((id, text)) + "\n").encode("utf-8")


def _check_id(id: object, where: str, id_type: str | None, column: str) -> str:
    """The corpus' id type after this id; ids are all integers or all strings."""
    if isinstance(id, bool) or not isinstance(id, (int, str)):
        what = "no" if id is None else f"a {type(id).__name__}"
        raise InputError(f"{where} has {what} id in field {column!r}; ids must be integers or "
                         f"strings (choose the field with --id-column).")
    if isinstance(id, int) and not -2**63 <= id < 2**63:
        raise InputError(f"{where} has an integer id outside the 64-bit range ({short(id)}); "
                         f"the output stores ids as int64, or use string ids.")
    kind = "int" if isinstance(id, int) else "str"
    if id_type is not None and kind != id_type:
        raise InputError(f"{where} has a {kind} id but earlier rows have {id_type} ids; ids must "
                         f"all be integers or all strings.")
    return kind


# --- JSON lines -------------------------------------------------------------------------------


def _jsonl_rows(path: Path, text_column: str, id_column: str, offset: int = 0
                ) -> Iterator[tuple[Any, Any, str, int]]:
    """(id, text, "input file F line N", byte offset of the line) for each record from ``offset``.

    Blank lines separate no records and are skipped, as ``encode --input`` does.
    """
    with open_input(path) as stream:
        stream.seek(offset)
        for line, record in json_lines(stream, f"input file {path}", offset):
            text = record_field(record, text_column, line.where, "--text-column", string=False)
            id = record_field(record, id_column, line.where, "--id-column", string=False)
            yield id, text, line.where, line.offset


# --- Parquet ----------------------------------------------------------------------------------


def _columns(text_column: str, id_column: str) -> tuple[list[str], dict[str, str]]:
    """The Parquet columns to read (id, text) and the options that choose them."""
    return [id_column, text_column], {text_column: "--text-column", id_column: "--id-column"}


def _parquet_rows(path: Path, text_column: str, id_column: str
                  ) -> Iterator[tuple[Any, Any, str, int]]:
    row = 0
    columns, flags = _columns(text_column, id_column)
    for ids, texts in parquet_columns(path, columns, flags=flags):
        for id, text in zip(ids, texts):
            yield id, text, f"input file {path} row {row}", 0
            row += 1


# --- one shard --------------------------------------------------------------------------------


def read_shard(shard: Shard, text_column: str, id_column: str) -> tuple[list, list]:
    """The (ids, texts) of the shard's rows, in file order, bad rows included.

    Raises :class:`InputError` when the rows are not those the scan saw (their digest differs).
    """
    ids: list = []
    texts: list = []
    count = shard.stop - shard.start
    path = Path(shard.path)
    if shard.format == "jsonl":
        for id, text, _, _ in _jsonl_rows(path, text_column, id_column, shard.offset):
            if len(ids) == count:
                break
            ids.append(id)
            texts.append(text)
    else:
        # Only the row groups that overlap the shard are decoded.
        columns, flags = _columns(text_column, id_column)
        metadata = parquet_file(path, "input file", columns, flags).metadata
        groups, first, begin = [], None, 0
        for group in range(metadata.num_row_groups):
            end = begin + metadata.row_group(group).num_rows
            if begin < shard.stop and end > shard.start:
                groups.append(group)
                first = begin if first is None else first
            begin = end
        row = first or 0
        for batch_ids, batch_texts in parquet_columns(path, columns, flags=flags,
                                                      row_groups=groups):
            low, high = max(shard.start - row, 0), max(min(shard.stop - row, len(batch_ids)), 0)
            ids += batch_ids[low:high]
            texts += batch_texts[low:high]
            row += len(batch_ids)
    digest = hashlib.sha256()
    for id, text in zip(ids, texts):
        digest.update(_row_bytes(id, text))
    if len(ids) != count or digest.hexdigest() != shard.sha256:
        raise InputError(f"input file {shard.path} changed since it was scanned: the {count} "
                         f"rows of shard {shard.name} from row {shard.start} are not those the "
                         f"scan read; run the command again.")
    return ids, texts
