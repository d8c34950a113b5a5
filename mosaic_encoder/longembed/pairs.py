"""Long training pairs from the standard library's documentation, for fine-tuning at length.

Each source file's docstrings (read with :mod:`ast`, never imported: see
:mod:`mosaic_encoder.pretraining.stdlib_corpus`), in file order, are packed into documents of at
most ``max_tokens`` tokens of the model's tokenizer; documents of at least ``min_tokens`` are
kept. A pair is the document's first sentence, which usually says what the rest is about (a
module's or class's summary line), against the rest of the document. A file's pairs go to the
held-out file or all to the training file, by the hash of its path that the pretraining corpus
uses. The needle task's default haystack, the language reference, is not among the sources.

Command line::

    python -m mosaic_encoder.longembed.pairs DIR --model CHECKPOINT  # DIR/{train,heldout}.jsonl
"""

from __future__ import annotations

import argparse
import itertools
import sys
import sysconfig
from collections.abc import Iterable, Iterator
from pathlib import Path

from ..arguments import CommandParser, add_model, positive_int
from ..checkpoint import CheckpointDir
from ..errors import MosaicError
from ..pretraining.stdlib_corpus import held_out, source_documents
from ..training.demo import write_jsonl
from .documents import TokenCounter, sentences

MIN_TOKENS = 1024
MAX_TOKENS = 4096


def packed(docstrings: list[str], counts: list[int], max_tokens: int) -> Iterator[tuple[str, int]]:
    """(document, tokens): consecutive docstrings joined while they fit in ``max_tokens``; a
    docstring longer than that on its own is left out."""
    parts, total = [], 0
    for text, count in zip(docstrings, counts):
        if parts and total + count > max_tokens:
            yield " ".join(parts), total
            parts, total = [], 0
        if count <= max_tokens:
            parts.append(text)
            total += count
    if parts:
        yield " ".join(parts), total


def pair(document: str) -> dict[str, str] | None:
    """{"anchor": first sentence, "positive": the rest}, or None for a one-sentence document."""
    parts = sentences(document)
    if len(parts) < 2:
        return None
    return {"anchor": parts[0], "positive": " ".join(parts[1:])}


def long_pairs(files: Iterable[tuple[str, str]], counter: TokenCounter, min_tokens: int,
               max_tokens: int) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """(training, held-out) pairs of ``files``, (relative path, docstring) in file order."""
    train, held = [], []
    for relative, group in itertools.groupby(files, key=lambda item: item[0]):
        docstrings = [text for _, text in group]
        for document, tokens in packed(docstrings, counter(docstrings), max_tokens):
            example = pair(document) if tokens >= min_tokens else None
            if example is not None:
                (held if held_out(relative) else train).append(example)
    return train, held


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m mosaic_encoder.longembed.pairs``."""
    parser = CommandParser(prog="python -m mosaic_encoder.longembed.pairs",
                           description="Write long (first sentence, rest) pairs from the "
                                       "standard library's docstrings as DIR/train.jsonl and "
                                       "DIR/heldout.jsonl.")
    parser.add_argument("directory", metavar="DIR", help="where the two files go")
    add_model(parser, "the checkpoint whose tokenizer counts the tokens", default=None)
    parser.add_argument("--min-tokens", type=positive_int, default=MIN_TOKENS,
                        help="shortest pair document, in the checkpoint's tokens")
    parser.add_argument("--max-tokens", type=positive_int, default=MAX_TOKENS,
                        help="longest pair document, in the checkpoint's tokens")
    parser.add_argument("--stdlib", metavar="DIR", default=sysconfig.get_paths()["stdlib"],
                        help="the standard library's folder")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        pipeline = CheckpointDir.open(args.model, args.revision).pipeline
        counter = TokenCounter(pipeline.transformer_dir / "tokenizer.json",
                               pipeline.do_lower_case)
        train, held = long_pairs(source_documents(Path(args.stdlib)), counter, args.min_tokens,
                                 args.max_tokens)
        directory = Path(args.directory)
        directory.mkdir(parents=True, exist_ok=True)
        write_jsonl(directory / "train.jsonl", train)
        write_jsonl(directory / "heldout.jsonl", held)
    except MosaicError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"{len(train)} training and {len(held)} held-out pairs of {args.min_tokens}-"
          f"{args.max_tokens} tokens -> {directory}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
