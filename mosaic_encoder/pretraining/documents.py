"""Pretraining corpus files: ``.txt`` (a document a line), ``.jsonl`` (a string field of each
record) or ``.parquet`` (a string column), streamed through :func:`mosaic_encoder.inputs.documents`
so that memory does not grow with their size. Blank documents are skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ..errors import InputError
from ..inputs import DOCUMENT_SUFFIXES, documents, input_file

WHAT = "corpus file"


@dataclass(frozen=True)
class DocumentFile:
    """One corpus file and the field (``.jsonl``) or column (``.parquet``) holding the text."""

    path: Path
    field: str = "text"

    @classmethod
    def open(cls, path: str | Path, field: str = "text") -> DocumentFile:
        """Check that ``path`` is a regular file of a known kind (without reading it)."""
        path = Path(path)
        if path.suffix not in DOCUMENT_SUFFIXES:
            raise InputError(f"{WHAT} {path} must end in {', '.join(DOCUMENT_SUFFIXES[:-1])} or "
                             f"{DOCUMENT_SUFFIXES[-1]}.")
        return cls(input_file(path, WHAT), field)

    @property
    def size(self) -> int:
        """Bytes on disk: the weight of this file when several are sampled."""
        return self.path.stat().st_size

    def __iter__(self) -> Iterator[str]:
        """The non-blank documents, in file order."""
        return (text for text in documents(self.path, self.field, WHAT) if text.strip())


def check_corpus(files: list[DocumentFile]) -> None:
    """Read every file once, so that a bad line fails before any output exists.

    Raises:
        InputError: a file is unreadable, not UTF-8, malformed, or holds no document.
    """
    for corpus in files:
        if sum(1 for _ in corpus) == 0:
            raise InputError(f"{WHAT} {corpus.path} holds no documents (it is empty or blank).")
