"""``mosaic-encoder train``: contrastive fine-tuning from the command line.

Registered by :mod:`mosaic_encoder.cli` through :func:`add_parser`; the flag defaults are the model
card's settings (:class:`~mosaic_encoder.training.config.TrainConfig`). Under
``torchrun --nproc_per_node N -m mosaic_encoder train ...`` every process runs this command.
The parser builds without importing torch; :func:`run` imports the training code.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..arguments import add_dtype, add_run_schedule, config_defaults, count, positive_int
from .config import DTYPES, LOSSES, METRICS, TrainConfig

DEFAULTS = config_defaults(TrainConfig)


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
                        help=".jsonl or .parquet files of anchor, positive and any number of "
                             "hard negatives; batches come from one file at a time, files drawn "
                             "in proportion to size")
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
    parser.add_argument("--loss", choices=LOSSES, default=d.loss,
                        help="mnrl: anchors pick their positive (MultipleNegativesRankingLoss); "
                             "symmetric: and positives their anchor (default: %(default)s)")
    parser.add_argument("--matryoshka-dims", type=positive_int, nargs="+", default=[],
                        metavar="D", help="Matryoshka: add the loss on the embeddings cut to "
                                          "each D, and evaluate at each D")
    parser.add_argument("--allow-duplicates", action="store_true",
                        help="let a text appear twice in a batch (by default a batch never "
                             "holds the same text twice, which would be a false negative)")
    parser.add_argument("--query-prompt", metavar="TEXT",
                        help="prepended to every anchor; saved as the checkpoint's 'query' prompt")
    parser.add_argument("--document-prompt", metavar="TEXT",
                        help="prepended to every positive and negative; saved as 'document'")
    parser.add_argument("--max-grad-norm", type=float, default=d.max_grad_norm,
                        help=f"gradient clipping norm (default: {d.max_grad_norm:g})")
    parser.add_argument("--epochs", type=positive_int, default=d.epochs,
                        help=f"passes over the data (default: {d.epochs})")
    parser.add_argument("--steps", type=positive_int, default=None,
                        help="optimizer steps (default: what --epochs gives)")
    parser.add_argument("--chunk-size", type=positive_int, default=None, metavar="N",
                        help="gradient cache: embed N texts per forward pass "
                             "(default: all at once)")
    parser.add_argument("--gradient-checkpointing", action="store_true",
                        help="recompute each encoder layer in the backward pass instead of "
                             "keeping its activations (less memory, about a third more compute)")
    add_dtype(parser, DTYPES, d.dtype,
              help="bfloat16: autocast with float32 master weights; auto: bfloat16 on CUDA, "
                   "float32 on CPU")
    parser.add_argument("--keep-best", choices=METRICS,
                        help="keep the model of the best held-out evaluation by this metric "
                             "(mrr or recall_at_1) in OUTPUT/best")
    add_run_schedule(parser, d)
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --output from its newest checkpoint; with "
                             "more --steps (or --epochs), extend a finished run")
    parser.add_argument("--no-tensorboard", action="store_true",
                        help="no TensorBoard events (written to OUTPUT/tensorboard when the "
                             "tensorboard package is installed)")
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
        progress=not args.no_progress, no_duplicates=not args.allow_duplicates, loss=args.loss,
        matryoshka_dims=tuple(args.matryoshka_dims), query_prompt=args.query_prompt,
        document_prompt=args.document_prompt, gradient_checkpointing=args.gradient_checkpointing,
        keep_best=args.keep_best, dtype=args.dtype, tensorboard=not args.no_tensorboard)


def run(args: argparse.Namespace) -> int:
    """Train; print a one-line summary on stderr (rank 0). Errors propagate as MosaicError."""
    from .contrastive import train

    result = train(config_from_args(args))
    if result.main:
        held_out = None
        if len(result.evaluations) >= 2:
            first, last = result.evaluations[0], result.evaluations[-1]
            held_out = (f"held-out recall@1 {first['eval_recall_at_1']:.3f} (step "
                        f"{first['step']}) -> {last['eval_recall_at_1']:.3f} (step "
                        f"{last['step']}), MRR {first['eval_mrr']:.3f} -> {last['eval_mrr']:.3f}")
        print(result.summary("trained", "loss", held_out), file=sys.stderr)
    return 0
