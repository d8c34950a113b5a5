"""``mosaic-encoder eval-longembed``: passkey and needle retrieval by length, offline.

Registered by :mod:`mosaic_encoder.cli` through :func:`add_parser`. Building the parser imports
only the shared argument types (:mod:`mosaic_encoder.arguments`); the model, numpy, the tokenizer
and matplotlib load when the command runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..arguments import add_embedding_batches, add_model, add_runtime, length_list
from ..errors import InputError

TASKS = ("passkey", "needle")
DEFAULT_LENGTHS = "256,512,1024,2048,4096"
DEFAULT_MAX_TOKENS = 65536
# 100 documents of a million tokens are about half a gigabyte of text per task.
LONGEST = 1 << 20


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``eval-longembed`` to an ``add_subparsers()`` object; it runs :func:`run`."""
    parser = subparsers.add_parser(
        "eval-longembed", help="passkey and needle retrieval by document length (LongEmbed)",
        description="Generate LongEmbed's passkey and needle retrieval tasks from a seed (50 "
                    "queries against 100 documents per length, lengths in the model's tokens) "
                    "and score a sentence-embedding checkpoint on them: nDCG@1, recall@1 and "
                    "MRR per length. Lengths beyond the checkpoint's max_seq_length are "
                    f"evaluated truncated, and marked. Token budget per batch: "
                    f"{DEFAULT_MAX_TOKENS} unless --max-tokens says otherwise.")
    add_model(parser, "sentence-transformers checkpoint", default=None)
    parser.add_argument("--task", choices=(*TASKS, "both"), default="both",
                        help="which task to generate and score")
    parser.add_argument("--lengths", type=length_list, default=length_list(DEFAULT_LENGTHS),
                        help=f"document lengths in tokens, [CLS] and [SEP] included (default: "
                             f"{DEFAULT_LENGTHS}; LongEmbed's go on to 32768)")
    parser.add_argument("--seed", type=int, default=0, help="fixes names, keys, facts, depths "
                                                             "and haystack cuts (default: 0)")
    parser.add_argument("--haystack", metavar="FILE",
                        help="needle task: prose to cut haystacks from, a .txt (lines of prose), "
                             ".jsonl or .parquet file (field 'text') (default: the Python "
                             "language reference that ships with the interpreter)")
    parser.add_argument("--depths", action="store_true",
                        help="also score the queries whose needle lies in the first, middle and "
                             "last tenth of its document")
    parser.add_argument("--query-prompt", metavar="TEXT",
                        help="put before every query (default: the checkpoint's 'query' prompt, "
                             "else its default prompt)")
    parser.add_argument("--document-prompt", metavar="TEXT",
                        help="put before every document (default: the checkpoint's 'document' "
                             "prompt, else its default prompt)")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON object")
    parser.add_argument("--plot", metavar="FILE.png", help="draw nDCG@1 against length")
    add_runtime(parser)
    add_embedding_batches(parser)
    parser.set_defaults(run=run, max_tokens=DEFAULT_MAX_TOKENS)
    return parser


def _check_plot(path: Path) -> None:
    """Fail before any work when the chart cannot be written."""
    if path.suffix != ".png":
        raise InputError(f"--plot file {path} must end in .png.")
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir() or not parent.is_dir():
        raise InputError(f"--plot file {path} cannot be written (no such directory, or it is "
                         f"one).")


def run(args: argparse.Namespace) -> int:
    import os
    import time

    from ..arguments import compute_device
    from ..arguments import max_seq_length as max_seq_length_arg
    from ..bench.measure import environment
    from ..checkpoint import CheckpointDir, checkpoint_directory
    from ..dtypes import DTYPES
    from ..sentence import SentenceEncoder
    from .documents import DOCUMENTS, QUERIES, TokenCounter
    from .evaluation import EmbeddingSettings, evaluate
    from .metrics import chance
    from .needle import Haystack, needle_task
    from .passkey import passkey_task

    started = time.perf_counter()
    plot = Path(args.plot) if args.plot else None
    if plot is not None:
        _check_plot(plot)
    if max(args.lengths) > LONGEST:
        raise InputError(f"--lengths go up to {LONGEST:,} tokens, got {max(args.lengths):,}.")
    max_seq_length = max_seq_length_arg(args.max_seq_length)
    device = compute_device(args.device)
    # What the run starts from: the commit, and how busy the machine is.
    machine = {**environment(device), "load_average": list(os.getloadavg())}
    model = checkpoint_directory(args.model, args.revision)
    pipeline = CheckpointDir.open(model).pipeline
    counter = TokenCounter(pipeline.transformer_dir / "tokenizer.json", pipeline.do_lower_case)
    names = TASKS if args.task == "both" else (args.task,)
    haystack = Haystack.read(args.haystack, counter) if "needle" in names else None
    tasks = [passkey_task(counter, length, args.seed) if name == "passkey"
             else needle_task(counter, haystack, length, args.seed)
             for name in names for length in args.lengths]
    settings = EmbeddingSettings(
        args.batch_size, args.max_tokens,
        _prompt(args.query_prompt, pipeline, "query"),
        _prompt(args.document_prompt, pipeline, "document"))
    generated = time.perf_counter()
    encoder = SentenceEncoder(model, dtype=DTYPES[args.dtype], device=device,
                              attention=args.attention, max_seq_length=max_seq_length)
    rows = evaluate(encoder, tasks, counter, settings, args.depths)
    hit, mrr = chance(DOCUMENTS)
    result = {
        "model": str(args.model), "tasks": list(names), "lengths": args.lengths,
        "seed": args.seed, "queries": QUERIES, "documents": DOCUMENTS,
        "haystack": haystack.source if haystack else None,
        "max_seq_length": encoder.max_seq_length, "query_prompt": settings.query_prompt,
        "document_prompt": settings.document_prompt, "dtype": args.dtype,
        "attention": args.attention, "chance": {"ndcg_at_1": hit, "mrr": mrr},
        "seconds": {"generate": round(generated - started, 1),
                    "embed": round(time.perf_counter() - generated, 1)},
        "environment": machine, "rows": [row.as_dict() for row in rows]}
    if plot is not None:
        from .plot import save_chart

        print(f"chart -> {save_chart([result], [str(args.model)], plot)}", file=sys.stderr)
    if args.json:
        sys.stdout.write(json.dumps(result, indent=1) + "\n")
    else:
        sys.stdout.write(table(result, args.depths))
    return 0


def _prompt(given: str | None, pipeline, name: str) -> str | None:
    """The prompt given, else the checkpoint's prompt called ``name``, else its default."""
    if given is not None:
        return given
    return pipeline.prompts[name] if name in pipeline.prompts else pipeline.prompt(None, None)


def table(result: dict, depths: bool) -> str:
    """The rows of ``result`` as a text table, with what truncation did in the last column."""
    header = f"{'task':<8} {'length':>6} {'tokens':>7} {'nDCG@1':>6} {'recall@1':>8} {'MRR':>6}"
    if depths:
        header += "".join(f" {name:>9}" for name in ("first", "middle", "last"))
    lines = [header + "  note"]
    for row in result["rows"]:
        line = (f"{row['task']:<8} {row['length']:>6} {row['mean_tokens']:>7.1f} "
                f"{row['ndcg_at_1']:>6.3f} {row['recall_at_1']:>8.3f} {row['mrr']:>6.3f}")
        if depths:
            line += "".join(f" {_bucket(row['depths'][name]):>9}"
                            for name in ("first", "middle", "last"))
        if row["truncated"]:
            line += (f"  truncated at {row['max_seq_length']}: {row['truncated']} documents cut, "
                     f"{row['needles_cut']} of {result['queries']} needles past the cut")
        lines.append(line)
    chance = result["chance"]
    lines.append(f"{result['queries']} queries against {result['documents']} documents per task "
                 f"and length; chance: nDCG@1 {chance['ndcg_at_1']:.3f}, MRR "
                 f"{chance['mrr']:.3f}" + ("; depth columns: nDCG@1 (queries)" if depths else ""))
    return "\n".join(lines) + "\n"


def _bucket(scores: dict) -> str:
    if not scores["queries"]:
        return "-"
    return f"{scores['ndcg_at_1']:.2f} ({scores['queries']})"
