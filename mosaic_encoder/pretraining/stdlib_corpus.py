"""An offline English corpus: the documentation that ships with the Python interpreter.

Documents are the docstrings of the standard library's modules, classes and functions (read with
:mod:`ast` from the source files, never imported, so no module's import-time code runs) and the
paragraphs of the language reference in ``pydoc_data.topics``. Whitespace is collapsed so that a
document is one line. The split is by source file: a file's documents all go to the held-out
part or all to the training part (the reference topics train), chosen by a hash of its path, so
no docstring is seen in both.
"""

from __future__ import annotations

import ast
import hashlib
import sysconfig
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

MIN_CHARS = 40  # shorter docstrings ("Return self.") carry little text
SKIPPED = ("site-packages", "test", "tests", "idlelib", "lib2to3", "__pycache__")


@dataclass(frozen=True)
class CorpusCounts:
    """What :func:`write_corpus` wrote: documents and characters per part."""

    train_documents: int
    train_chars: int
    held_out_documents: int
    held_out_chars: int


def _one_line(text: str) -> str:
    return " ".join(text.split())


def source_documents(root: Path) -> Iterator[tuple[str, str]]:
    """(relative source path, document) for every docstring of the library under ``root``."""
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root)
        if any(part in SKIPPED for part in relative.parts):
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # invalid escape sequences in old sources
                tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue  # templates and files for other Python versions
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                                 ast.AsyncFunctionDef)):
                docstring = ast.get_docstring(node)
                if docstring and len(docstring) >= MIN_CHARS:
                    yield str(relative), _one_line(docstring)


def reference_documents() -> Iterator[str]:
    """The paragraphs of the language reference topics (``pydoc_data.topics``)."""
    from pydoc_data.topics import topics

    for name in sorted(topics):
        for paragraph in topics[name].split("\n\n"):
            text = _one_line(paragraph)
            if len(text) >= MIN_CHARS:
                yield text


def held_out(relative: str, share: int = 10) -> bool:
    """Whether the source file ``relative`` belongs to the held-out part (one file in ``share``)."""
    return int(hashlib.sha256(relative.encode("utf-8")).hexdigest(), 16) % share == 0


def write_corpus(train: Path, held: Path, root: Path | None = None) -> CorpusCounts:
    """Write the training and held-out corpora as ``.txt`` files, one document a line.

    Args:
        train, held: output files.
        root: the standard library's folder (default: this interpreter's).
    """
    root = Path(root or sysconfig.get_paths()["stdlib"])
    counts = {"train": [0, 0], "held": [0, 0]}
    with open(train, "w", encoding="utf-8") as train_stream, \
            open(held, "w", encoding="utf-8") as held_stream:
        for text in reference_documents():
            train_stream.write(text + "\n")
            counts["train"][0] += 1
            counts["train"][1] += len(text)
        for relative, text in source_documents(root):
            part = "held" if held_out(relative) else "train"
            (held_stream if part == "held" else train_stream).write(text + "\n")
            counts[part][0] += 1
            counts[part][1] += len(text)
    return CorpusCounts(*counts["train"], *counts["held"])
