"""The ``mosaic-encoder`` command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from .errors import InputError, MosaicError

BUNDLED_CHECKPOINT = Path(__file__).resolve().parent.parent / "weights" / "mosaic-tiny"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _read_texts(args: argparse.Namespace) -> list[str]:
    if args.texts:
        texts = list(args.texts)
    else:
        try:
            texts = sys.stdin.buffer.read().decode("utf-8").splitlines()
        except UnicodeDecodeError as err:
            raise InputError(f"standard input is not UTF-8 text ({err.reason} at byte "
                             f"{err.start}).") from None
    if not texts:
        raise InputError("no input texts were given (pass them as arguments or on standard input).")
    return texts


def _write_atomically(path: Path, write) -> None:
    """Write through a temporary file in the same directory, renamed into place on success."""
    directory = path.parent if str(path.parent) else Path(".")
    try:
        handle, temporary = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise InputError(f"output path {path} cannot be written ({err.strerror}).") from None
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _encode(args: argparse.Namespace) -> int:
    from .sentence import SentenceEncoder

    texts = _read_texts(args)
    model = Path(args.model) if args.model else BUNDLED_CHECKPOINT
    if args.model is None:
        print(f"note: using the bundled random-weight checkpoint {model}; its embeddings carry no "
              f"meaning (pass --model DIR for real weights).", file=sys.stderr)
    output = Path(args.output) if args.output else None
    if output is not None and output.suffix not in (".npy", ".jsonl"):
        raise InputError(f"output file {output} must end in .npy or .jsonl.")
    encoder = SentenceEncoder(model, dtype=DTYPES[args.dtype], device=args.device,
                              attention=args.attention, max_seq_length=args.max_seq_length)
    embeddings = encoder.encode(texts, batch_size=args.batch_size)
    lines = (json.dumps({"text": t, "embedding": e.tolist()}) + "\n" for t, e in zip(texts, embeddings))
    if output is None:
        sys.stdout.writelines(lines)
    elif output.suffix == ".npy":
        _write_atomically(output, lambda stream: np.save(stream, embeddings))
    else:
        _write_atomically(output, lambda stream: stream.writelines(l.encode() for l in lines))
    print(f"encoded {len(texts)} text(s) into {embeddings.shape[1]}-d embeddings"
          f"{f' -> {output}' if output else ''}; {encoder.last_truncated} truncated.",
          file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mosaic-encoder",
                                     description="MosaicBERT / lodestone encoders in plain PyTorch.")
    commands = parser.add_subparsers(dest="command", required=True)
    encode = commands.add_parser("encode", help="sentence embeddings of texts")
    encode.add_argument("texts", nargs="*", help="texts to embed (default: lines of stdin)")
    encode.add_argument("--model", help="checkpoint directory (default: bundled random-weight one)")
    encode.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    encode.add_argument("--device", default="cpu")
    encode.add_argument("--attention", choices=("auto", "sdpa", "triton"), default="auto")
    encode.add_argument("--batch-size", type=int, default=32)
    encode.add_argument("--max-seq-length", type=int, default=None)
    encode.add_argument("--output", help="write .npy or .jsonl here instead of JSON lines on stdout")
    encode.set_defaults(run=_encode)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except MosaicError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
