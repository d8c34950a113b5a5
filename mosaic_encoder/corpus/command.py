"""``mosaic-encoder embed-corpus INPUT OUTPUT_DIR --model DIR``: the command-line front of the package.

Everything that can be wrong with the arguments, the model, the input or the output directory is
found before a model is loaded, and reported as one :class:`MosaicError` sentence; nothing already
in ``OUTPUT_DIR`` is touched until every check has passed.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys

from ..arguments import (add_embedding_batches, add_model, add_runtime, compute_device,
                         max_seq_length, positive_int)
from ..errors import InputError
from .shards import MANIFEST_NAME


def add_parser(commands) -> None:
    """Register ``embed-corpus`` on the ``mosaic-encoder`` subcommand parsers."""

    parser = commands.add_parser(
        "embed-corpus", help="embed a .jsonl/.parquet corpus into Parquet shards (local or Ray)",
        description="Embed the text column of a .jsonl or .parquet file, or of a directory of "
                    "them, into Parquet shards of (id, float32 L2-normalised embedding) plus "
                    f"{MANIFEST_NAME}. Rerunning into the same OUTPUT_DIR computes only the "
                    "shards that are missing or cannot be proven to embed this input with this "
                    "model.")
    parser.add_argument("input", metavar="INPUT", help="a .jsonl or .parquet file or a directory "
                                                       "of them")
    parser.add_argument("output", metavar="OUTPUT_DIR", help="where shards and manifest go")
    add_model(parser, default=None)
    parser.add_argument("--text-column", default="text", help="the text column (default: text)")
    parser.add_argument("--id-column", default="id",
                        help="the id column, integers or strings, unique (default: id)")
    add_runtime(parser)
    add_embedding_batches(parser)
    parser.add_argument("--rows-per-shard", type=positive_int, default=1000, metavar="N",
                        help="input rows per output shard (default: 1000)")
    parser.add_argument("--engine", choices=("local", "ray"), default="local",
                        help="local: this process (default); ray: a Ray Data actor pool")
    parser.add_argument("--address", default=None,
                        help="Ray cluster address, e.g. auto (default: start a local Ray)")
    parser.add_argument("--num-workers", type=positive_int, default=1,
                        help="Ray actors, each holding one model (default: 1)")
    parser.add_argument("--gpus-per-worker", type=float, default=0,
                        help="GPUs per Ray actor; 1 runs one worker per GPU (default: 0)")
    parser.add_argument("--cpus-per-worker", type=float, default=1,
                        help="CPUs per Ray actor (default: 1)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Check the engine options, then :func:`embed_corpus`; one summary line on stderr."""
    from ..checkpoint import checkpoint_directory
    from .driver import embed_corpus
    from .settings import CorpusSettings

    ray_options = [flag for flag, value, default in (
        ("--address", args.address, None), ("--num-workers", args.num_workers, 1),
        ("--gpus-per-worker", args.gpus_per_worker, 0),
        ("--cpus-per-worker", args.cpus_per_worker, 1)) if value != default]
    if args.engine == "local":
        if ray_options:
            raise InputError(f"{ray_options[0]} needs --engine ray.")
        compute_device(args.device)
    else:
        if importlib.util.find_spec("ray") is None:
            raise InputError('--engine ray needs Ray: pip install -e ".[ray]" (or use --engine '
                             'local).')
        if args.device.startswith("cuda") and not args.gpus_per_worker:
            raise InputError(f"--device {args.device} with --engine ray needs --gpus-per-worker "
                             f"(e.g. 1), or the workers get no GPU.")
    model = checkpoint_directory(args.model, args.revision)
    settings = CorpusSettings(model=str(model), dtype=args.dtype, device=args.device,
                              attention=args.attention, batch_size=args.batch_size,
                              max_tokens_per_batch=args.max_tokens,
                              max_seq_length=max_seq_length(args.max_seq_length),
                              text_column=args.text_column,
                              id_column=args.id_column, rows_per_shard=args.rows_per_shard)
    ray_kwargs = {} if args.engine == "local" else {
        "address": args.address, "num_workers": args.num_workers,
        "gpus_per_worker": args.gpus_per_worker, "cpus_per_worker": args.cpus_per_worker}
    summary = embed_corpus(args.input, args.output, settings, args.engine, **ray_kwargs)
    replaced = f", {summary.replaced} shard file(s) did not match and were replaced" \
        if summary.replaced else ""
    print(f"embedded {summary.written} row(s) into {summary.computed} shard(s) in "
          f"{summary.seconds:.1f} s ({summary.already_done} shard(s) were already "
          f"done{replaced}) -> "
          f"{args.output}; {summary.rows} rows in all, {summary.bad_rows} bad (empty or not "
          f"text; listed in {MANIFEST_NAME}).", file=sys.stderr)
    return 0
