"""``mosaic-encoder train``: contrastive fine-tuning from the command line.

Registered by :mod:`mosaic_encoder.cli` through :func:`add_parser`; the flag defaults are the model
card's settings (:class:`~mosaic_encoder.training.config.TrainConfig`). Under
``torchrun --nproc_per_node N -m mosaic_encoder train ...`` every process runs this command.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..arguments import count, positive_int
from ..config import ATTENTION_IMPLS
from .config import TrainConfig

DEFAULTS = TrainConfig(model=Path("."), data=(Path("."),), output=Path("."))


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``train`` subcommand to an ``add_subparsers()`` object; it runs :func:`run`."""
    d = DEFAULTS
    parser = subparsers.add_parser(
        "train", help="contrastive fine-tuning (in-batch negatives), one or many processes",
        description="Fine-tune a sentence encoder on pairs or triplets with in-batch negatives "
                    "(MultipleNegativesRankingLoss). Defaults are lodestone-base-4096-v1's "
                    "training settings. Launch with torchrun for several processes or machines.")
    parser.add_argument("--model", required=True, metavar="DIR", help="starting checkpoint")
    parser.add_argument("--data", required=True, nargs="+", metavar="FILE",
                        help=".jsonl or .parquet files of anchor, positive[, negative]; batches "
                             "come from one file at a time, files drawn in proportion to size")
    parser.add_argument("--output", required=True, metavar="DIR",
                        help="run directory: final model at the top, checkpoints/ and log.jsonl")
    parser.add_argument("--eval-data", metavar="FILE",
                        help="held-out pairs: recall@1 and MRR at the start, every --eval-every "
                             "steps and at the end")
    parser.add_argument("--lr", type=float, default=d.learning_rate,
                        help=f"AdamW learning rate (default: {d.learning_rate})")
    parser.add_argument("--weight-decay", type=float, default=d.weight_decay,
                        help=f"AdamW weight decay (default: {d.weight_decay})")
    parser.add_argument("--warmup-steps", type=count, default=d.warmup_steps,
                        help=f"linear warm-up steps, then linear decay (default: {d.warmup_steps})")
    parser.add_argument("--batch-size", type=positive_int, default=d.batch_size,
                        help=f"examples per global batch, over all processes "
                             f"(default: {d.batch_size})")
    parser.add_argument("--max-seq-length", type=positive_int, default=d.max_seq_length,
                        help=f"truncate texts to this many tokens (default: {d.max_seq_length})")
    parser.add_argument("--scale", type=float, default=d.scale,
                        help=f"cosine similarity scale (default: {d.scale:g})")
    parser.add_argument("--max-grad-norm", type=float, default=d.max_grad_norm,
                        help=f"gradient clipping norm (default: {d.max_grad_norm:g})")
    parser.add_argument("--epochs", type=positive_int, default=d.epochs,
                        help=f"passes over the data (default: {d.epochs})")
    parser.add_argument("--steps", type=positive_int, default=None,
                        help="optimizer steps (default: what --epochs gives)")
    parser.add_argument("--chunk-size", type=positive_int, default=None, metavar="N",
                        help="gradient cache: embed N texts per forward pass "
                             "(default: all at once)")
    parser.add_argument("--eval-every", type=count, default=d.eval_every, metavar="STEPS")
    parser.add_argument("--save-every", type=count, default=d.save_every, metavar="STEPS",
                        help=f"checkpoint interval (default: {d.save_every}; 0: only at the end)")
    parser.add_argument("--log-every", type=positive_int, default=d.log_every, metavar="STEPS")
    parser.add_argument("--keep-checkpoints", type=positive_int, default=d.keep_checkpoints)
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--device", default=d.device,
                        help="cpu or cuda (under torchrun each process takes its local GPU)")
    parser.add_argument("--attention", choices=ATTENTION_IMPLS, default=d.attention)
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --output from its newest checkpoint")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(run=run)
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(
        model=Path(args.model), data=tuple(Path(p) for p in args.data), output=Path(args.output),
        eval_data=Path(args.eval_data) if args.eval_data else None, learning_rate=args.lr,
        weight_decay=args.weight_decay, warmup_steps=args.warmup_steps,
        batch_size=args.batch_size, max_seq_length=args.max_seq_length, scale=args.scale,
        max_grad_norm=args.max_grad_norm, epochs=args.epochs, steps=args.steps,
        chunk_size=args.chunk_size, eval_every=args.eval_every, save_every=args.save_every,
        log_every=args.log_every, keep_checkpoints=args.keep_checkpoints, seed=args.seed,
        device=args.device, attention=args.attention, resume=args.resume,
        progress=not args.no_progress)


def run(args: argparse.Namespace) -> int:
    """Train; print a one-line summary on stderr (rank 0). Errors propagate as MosaicError."""
    from .contrastive import train

    result = train(config_from_args(args))
    if result.main:
        parts = [f"trained {result.steps} steps -> {result.output}"]
        if result.records:
            start, end = result.records[0]["loss"], result.records[-1]["loss"]
            parts.append(f"loss {start:.4f} -> {end:.4f}")
        if len(result.evaluations) >= 2:
            first, last = result.evaluations[0], result.evaluations[-1]
            parts.append(f"held-out recall@1 {first['eval_recall_at_1']:.3f} -> "
                         f"{last['eval_recall_at_1']:.3f}, MRR {first['eval_mrr']:.3f} -> "
                         f"{last['eval_mrr']:.3f}")
        print("; ".join(parts), file=sys.stderr)
    return 0
