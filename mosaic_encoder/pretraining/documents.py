"""Pretraining documents, streamed from ``.txt``, ``.jsonl`` or ``.parquet`` files.

A ``.txt`` file holds one document a line; a ``.jsonl`` file one JSON object a line, the document
in a string field; a ``.parquet`` file a string column. Blank documents are skipped. Files are
read a line (or a parquet record batch) at a time, so memory does not grow with their size.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ..errors import InputError

SUFFIXES = (".txt", ".jsonl", ".parquet")
PARQUET_BATCH = 1024  # rows per record batch read from a parquet file


@dataclass(frozen=True)
class DocumentFile:
    """One corpus file and the field (``.jsonl``) or column (``.parquet``) holding the text."""

    path: Path
    field: str = "text"

    @classmethod
    def open(cls, path: str | Path, field: str = "text") -> DocumentFile:
        """Check that ``path`` is a corpus file of a known kind (without reading it)."""
        path = Path(path)
        if path.suffix not in SUFFIXES:
            raise InputError(f"corpus file {path} must end in .txt, .jsonl or .parquet.")
        if not path.is_file():
            raise InputError(f"corpus file {path} does not exist or is not a file.")
        return cls(path, field)

    @property
    def size(self) -> int:
        """Bytes on disk: the weight of this file when several are sampled."""
        return self.path.stat().st_size

    def __iter__(self) -> Iterator[str]:
        """The non-blank documents, in file order."""
        if self.path.suffix == ".parquet":
            yield from self._parquet()
            return
        try:
            with self.path.open("rb") as stream:
                for number, raw in enumerate(stream, start=1):
                    document = self._document(raw, number)
                    if document.strip():
                        yield document
        except OSError as err:
            raise InputError(f"corpus file {self.path} cannot be read ({err.strerror}).") from None

    def _document(self, raw: bytes, number: int) -> str:
        try:
            line = raw.decode("utf-8-sig" if number == 1 else "utf-8").rstrip("\r\n")
        except UnicodeDecodeError as err:
            raise InputError(f"corpus file {self.path} line {number} is not UTF-8 text "
                             f"({err.reason} at byte {err.start}).") from None
        if self.path.suffix == ".txt" or not line.strip():
            return line
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise InputError(f"corpus file {self.path} line {number} is not valid JSON "
                             f"({err.msg}).") from None
        if not isinstance(record, dict) or not isinstance(record.get(self.field), str):
            raise InputError(f"corpus file {self.path} line {number} has no string field "
                             f"{self.field!r} (choose it with --field).")
        return record[self.field]

    def _parquet(self) -> Iterator[str]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            reader = pq.ParquetFile(self.path)
        except (OSError, pa.ArrowException) as err:
            raise InputError(f"corpus file {self.path} is not a readable parquet file "
                             f"({err}).") from None
        schema = reader.schema_arrow
        if self.field not in schema.names:
            raise InputError(f"corpus file {self.path} has no column {self.field!r} (columns: "
                             f"{', '.join(schema.names) or 'none'}; choose it with --field).")
        kind = schema.field(self.field).type
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
            raise InputError(f"corpus file {self.path} column {self.field!r} holds {kind}, not "
                             f"strings.")
        for batch in reader.iter_batches(batch_size=PARQUET_BATCH, columns=[self.field]):
            for document in batch.column(0).to_pylist():
                if document is not None and document.strip():
                    yield document


def check_corpus(files: list[DocumentFile]) -> None:
    """Read every file once, so that a bad line fails before any output exists.

    Raises:
        InputError: a file is unreadable, not UTF-8, malformed, or holds no document.
    """
    for corpus in files:
        if next(iter(corpus), None) is None:
            raise InputError(f"corpus file {corpus.path} holds no documents (it is empty or "
                             f"blank).")
        for _ in corpus:
            pass
