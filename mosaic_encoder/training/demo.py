"""Offline demonstration data: (summary line, rest of docstring) pairs from the standard library.

Every class, function and method documented in a fixed list of standard-library modules gives one
pair: the anchor is the docstring's summary line, the positive is the rest of the docstring. A
held-out share is chosen by a hash of the object's qualified name, so it is the same on every run
of the same Python version. Nothing is downloaded.

Command line::

    python -m mosaic_encoder.training.demo DIR     # writes DIR/train.jsonl and DIR/heldout.jsonl
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import re
import sys
import warnings
import zlib
from pathlib import Path

from ..arguments import CommandParser, positive_int
from ..atomic import atomic_write

MODULES = (
    "abc", "argparse", "array", "ast", "asyncio", "base64", "bisect", "calendar", "cmd", "codecs",
    "collections", "configparser", "contextlib", "copy", "csv", "dataclasses", "datetime",
    "decimal", "difflib", "dis", "doctest", "email.message", "email.utils", "enum", "filecmp",
    "fnmatch", "fractions", "ftplib", "functools", "getopt", "gettext", "glob", "gzip", "hashlib",
    "heapq", "hmac", "html", "html.parser", "http.client", "http.cookies", "http.server", "imaplib",
    "inspect", "io", "ipaddress", "itertools", "json", "locale", "logging", "logging.handlers",
    "lzma", "mailbox", "mimetypes", "netrc", "numbers", "operator", "optparse", "os", "pathlib",
    "pdb", "pickle", "pickletools", "pkgutil", "platform", "plistlib", "poplib", "pprint",
    "pstats", "queue", "quopri", "random", "re", "reprlib", "sched", "secrets", "selectors",
    "shelve", "shlex", "shutil", "signal", "smtplib", "socket", "socketserver", "statistics",
    "string", "struct", "subprocess", "sysconfig", "tabnanny", "tarfile", "tempfile", "textwrap",
    "threading", "timeit", "token", "tokenize", "trace", "traceback", "types", "typing",
    "unittest.case", "unittest.mock", "urllib.parse", "urllib.request", "uuid", "warnings",
    "wave", "weakref", "xml.dom.minidom", "xml.etree.ElementTree", "zipfile", "zipimport",
)
_SIGNATURE = re.compile(r"^[\w.]+\(.*\)")


def _split(doc: str) -> tuple[str, str] | None:
    """(summary line, rest) of a cleaned docstring, or None when either part is too thin."""
    lines = doc.strip().splitlines()
    if len(lines) < 3 or lines[1].strip():
        return None  # no blank line after the summary: not a summary-plus-body docstring
    summary, rest = lines[0].strip(), "\n".join(lines[2:]).strip()
    if len(summary) < 15 or len(rest) < 40 or _SIGNATURE.match(summary):
        return None
    return summary, rest


def _documented(module) -> list[tuple[str, str]]:
    """(qualified name, docstring) of the module's own classes, functions and methods."""
    found = []
    for name, value in sorted(vars(module).items()):
        if name.startswith("_"):
            continue
        members = [(name, value)]
        if inspect.isclass(value):
            members += [(f"{name}.{m}", v) for m, v in sorted(vars(value).items())
                        if not m.startswith("_")]
        for qualified, member in members:
            member = member.__func__ if isinstance(member, (classmethod, staticmethod)) else member
            if not (inspect.isclass(member) or inspect.isfunction(member)
                    or inspect.isbuiltin(member) or inspect.ismethoddescriptor(member)):
                continue
            if getattr(member, "__module__", module.__name__) != module.__name__:
                continue
            with warnings.catch_warnings():  # typing.io and typing.re warn when touched
                warnings.simplefilter("ignore", DeprecationWarning)
                doc = member.__doc__
            doc = inspect.cleandoc(doc) if isinstance(doc, str) else None
            if doc:
                found.append((f"{module.__name__}.{qualified}", doc))
    return found


def docstring_pairs(modules: tuple[str, ...] = MODULES) -> list[tuple[str, dict[str, str]]]:
    """(qualified name, {"anchor": summary, "positive": rest}) for each usable docstring.

    Modules that this Python lacks are skipped; repeated summaries or bodies are kept once.
    """
    pairs, seen = [], set()
    for module_name in modules:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        for qualified, doc in _documented(module):
            split = _split(doc)
            if split is None or split[0] in seen or split[1] in seen:
                continue
            seen.update(split)
            pairs.append((qualified, {"anchor": split[0], "positive": split[1]}))
    return pairs


def split_held_out(pairs: list[tuple[str, dict[str, str]]], every: int = 5
                   ) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """(train, held-out): an example is held out when the CRC-32 of its name is 0 mod ``every``."""
    train, held_out = [], []
    for qualified, pair in pairs:
        (held_out if zlib.crc32(qualified.encode()) % every == 0 else train).append(pair)
    return train, held_out


def write_jsonl(path: Path, rows: list[dict[str, str]]) -> None:
    data = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode("utf-8")
    atomic_write(path, lambda stream: stream.write(data))


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m mosaic_encoder.training.demo``."""
    parser = CommandParser(prog="python -m mosaic_encoder.training.demo",
                           description="Write standard-library docstring pairs as "
                                       "DIR/train.jsonl and DIR/heldout.jsonl.")
    parser.add_argument("directory", metavar="DIR", help="where the two files go (created)")
    parser.add_argument("--held-out-every", type=positive_int, default=5, metavar="K",
                        help="hold out about one pair in K")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    directory = Path(args.directory)
    directory.mkdir(parents=True, exist_ok=True)
    train, held_out = split_held_out(docstring_pairs(), args.held_out_every)
    write_jsonl(directory / "train.jsonl", train)
    write_jsonl(directory / "heldout.jsonl", held_out)
    print(f"{len(train)} training and {len(held_out)} held-out pairs -> {directory}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
