"""The corpus input: ``.jsonl`` / ``.parquet`` files of (id, text) rows, scanned once before any work.

:func:`scan_corpus` reads every input file in full before a model is loaded, so that every input
error (a missing column, a line that is not UTF-8 JSON, an unreadable Parquet file, a missing or
duplicated id) is one :class:`InputError` raised before anything is computed or written. The scan
also fixes the shards: each file is cut into consecutive row ranges of ``rows_per_shard`` rows, so
the shard assignment depends on the input alone and a rerun finds the same shards.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

from ..errors import InputError

FORMATS = {".jsonl": "jsonl", ".parquet": "parquet"}


@dataclass(frozen=True)
class Shard:
    """Rows ``start`` to ``stop`` (exclusive) of one input file, written as one output file.

    ``offset`` is the byte offset of row ``start`` in a JSON-lines file (0 for Parquet), so a worker
    reads its rows without scanning the file from the beginning; ``embedded`` counts the rows whose
    text is a non-empty string, i.e. the rows the shard's output file holds.
    """

    name: str
    path: str
    format: str
    start: int
    stop: int
    offset: int
    embedded: int

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
    """What the scan found: input files (name, bytes, rows), shards, bad rows and the id type."""

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
    """The input files: ``path`` itself, or the ``.jsonl``/``.parquet`` files of a directory (sorted)."""
    if not path.exists():
        raise InputError(f"input {path} does not exist.")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in FORMATS and p.is_file()
                       and not p.name.startswith("."))
        if not files:
            raise InputError(f"input directory {path} holds no .jsonl or .parquet files.")
        return files
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
        for id, text, where, offset in reader(file, text_column, id_column):
            if rows % rows_per_shard == 0:
                if rows:
                    corpus.shards.append(_shard(number, file, format, rows, rows_per_shard,
                                                first_offset, embedded))
                first_offset, embedded = offset, 0
            corpus.id_type = _check_id(id, where, corpus.id_type, id_column)
            if id in seen:
                raise InputError(f"{where} repeats id {id!r}; every id must be unique.")
            seen.add(id)
            problem = text_problem(text)
            if problem is None:
                embedded += 1
            else:
                corpus.bad_rows.append(BadRow(id, file.name, rows, problem))
            rows += 1
        if rows:
            corpus.shards.append(_shard(number, file, format, rows, rows_per_shard, first_offset,
                                        embedded))
        corpus.files.append({"name": file.name, "bytes": file.stat().st_size, "rows": rows})
    return corpus


def _shard(number: int, file: Path, format: str, rows: int, rows_per_shard: int, offset: int,
           embedded: int) -> Shard:
    """The shard holding the last rows read so far (``rows`` of them in the file)."""
    index = (rows - 1) // rows_per_shard
    return Shard(f"part-{number:05d}-{index:06d}", str(file.resolve()), format,
                 index * rows_per_shard, rows, offset, embedded)


def _check_id(id: object, where: str, id_type: str | None, column: str) -> str:
    """The corpus' id type after this id; ids are all integers or all strings."""
    if isinstance(id, bool) or not isinstance(id, (int, str)):
        what = "no" if id is None else f"a {type(id).__name__}"
        raise InputError(f"{where} has {what} id in field {column!r}; ids must be integers or "
                         f"strings (choose the field with --id-column).")
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
    try:
        stream = path.open("rb")
    except OSError as err:
        raise InputError(f"input file {path} cannot be read ({err.strerror}).") from None
    with stream:
        stream.seek(offset)
        number = 0
        position = offset
        for raw in stream:
            number += 1
            line_offset, position = position, position + len(raw)
            where = f"input file {path} line {number}" if not offset else \
                f"input file {path} at byte {line_offset}"
            try:
                line = raw.decode("utf-8-sig" if line_offset == 0 else "utf-8")
            except UnicodeDecodeError as err:
                raise InputError(f"{where} is not UTF-8 ({err.reason} at byte "
                                 f"{line_offset + err.start}).") from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise InputError(f"{where} is not valid JSON ({err.msg}).") from None
            if not isinstance(record, dict):
                raise InputError(f"{where} is not a JSON object.")
            for column, flag in ((text_column, "--text-column"), (id_column, "--id-column")):
                if column not in record:
                    raise InputError(f"{where} has no field {column!r} (choose it with {flag}).")
            yield record[id_column], record[text_column], where, line_offset


# --- Parquet ----------------------------------------------------------------------------------


def _parquet_file(path: Path, text_column: str, id_column: str):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as err:
        raise InputError(f"input file {path} is not a readable Parquet file ({err}).") from None
    names = parquet.schema_arrow.names
    for column, flag in ((text_column, "--text-column"), (id_column, "--id-column")):
        if column not in names:
            raise InputError(f"input file {path} has no column {column!r} (its columns: "
                             f"{', '.join(names)}; choose it with {flag}).")
    return parquet


def _parquet_batches(path: Path, text_column: str, id_column: str, row_groups=None):
    """(ids, texts) lists per record batch, with read errors as :class:`InputError`."""
    import pyarrow as pa

    parquet = _parquet_file(path, text_column, id_column)
    groups = range(parquet.num_row_groups) if row_groups is None else row_groups
    try:
        for batch in parquet.iter_batches(row_groups=list(groups),
                                          columns=[id_column, text_column]):
            yield batch.column(0).to_pylist(), batch.column(1).to_pylist()
    except (OSError, pa.ArrowException) as err:
        raise InputError(f"input file {path} is not a readable Parquet file ({err}).") from None


def _parquet_rows(path: Path, text_column: str, id_column: str
                  ) -> Iterator[tuple[Any, Any, str, int]]:
    row = 0
    for ids, texts in _parquet_batches(path, text_column, id_column):
        for id, text in zip(ids, texts):
            yield id, text, f"input file {path} row {row}", 0
            row += 1


# --- one shard --------------------------------------------------------------------------------


def read_shard(shard: Shard, text_column: str, id_column: str) -> tuple[list, list]:
    """The (ids, texts) of the shard's rows, in file order, bad rows included."""
    ids: list = []
    texts: list = []
    count = shard.stop - shard.start
    if shard.format == "jsonl":
        for id, text, _, _ in _jsonl_rows(Path(shard.path), text_column, id_column, shard.offset):
            if len(ids) == count:
                break
            ids.append(id)
            texts.append(text)
    else:
        # Only the row groups that overlap the shard are decoded.
        path = Path(shard.path)
        metadata = _parquet_file(path, text_column, id_column).metadata
        groups, first, begin = [], None, 0
        for group in range(metadata.num_row_groups):
            end = begin + metadata.row_group(group).num_rows
            if begin < shard.stop and end > shard.start:
                groups.append(group)
                first = begin if first is None else first
            begin = end
        row = first or 0
        for batch_ids, batch_texts in _parquet_batches(path, text_column, id_column, groups):
            low, high = max(shard.start - row, 0), max(min(shard.stop - row, len(batch_ids)), 0)
            ids += batch_ids[low:high]
            texts += batch_texts[low:high]
            row += len(batch_ids)
    if len(ids) != count:
        raise InputError(f"input file {shard.path} changed since it was scanned: shard "
                         f"{shard.name} expected {count} rows from row {shard.start}, found "
                         f"{len(ids)}.")
    return ids, texts
