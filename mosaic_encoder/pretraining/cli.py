"""``mosaic-encoder init``, ``pretrain`` and ``eval-mlm``.

Registered by :mod:`mosaic_encoder.cli` through :func:`add_parsers`. ``pretrain``'s defaults are
MosaicBERT's recipe (:class:`~mosaic_encoder.pretraining.config.PretrainConfig`); under
``torchrun --nproc_per_node N -m mosaic_encoder pretrain ...`` every process runs it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..arguments import add_attention, add_run_schedule, compute_device, length_list, positive_int
from ..errors import InputError
from .config import MaskingRates, PretrainConfig

DEFAULTS = PretrainConfig(model=Path("."), data=(Path("."),), output=Path("."), steps=1)
DEFAULT_LENGTHS = "128,256,512,1024"


def add_parsers(subparsers) -> None:
    """Add ``init``, ``pretrain`` and ``eval-mlm`` to an ``add_subparsers()`` object."""
    _add_init(subparsers)
    _add_pretrain(subparsers)
    _add_eval(subparsers)


def _add_init(subparsers) -> None:
    parser = subparsers.add_parser(
        "init", help="a freshly initialised masked-LM checkpoint from a config",
        description="Write a masked-LM checkpoint directory with BERT's initialisation (normal, "
                    "std initializer_range or 0.02; norm weights 1, biases 0) for the geometry "
                    "and design in a strict config file (docs/variants.md), with the tokenizer "
                    "files of DIR.")
    parser.add_argument("output", metavar="OUTPUT_DIR", help="a new or empty directory")
    parser.add_argument("--config", required=True, metavar="FILE",
                        help="config.json-style file: geometry and the design fields "
                             "position_embedding_type, feed_forward, norm_type, "
                             "layer_norm_position (and alibi_learned_slopes or rope_theta)")
    parser.add_argument("--tokenizer", required=True, metavar="DIR",
                        help="directory holding tokenizer.json (and its companion files)")
    parser.add_argument("--seed", type=int, default=0, help="fixes the initial weights")
    parser.set_defaults(run=_init)


def _init(args: argparse.Namespace) -> int:
    from .initialise import init_checkpoint

    output = init_checkpoint(Path(args.config), Path(args.tokenizer), Path(args.output),
                             args.seed)
    print(f"initialised {output}", file=sys.stderr)
    return 0


def _rate(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text[:40]!r}") from None


def _add_masking(parser: argparse.ArgumentParser) -> None:
    d = DEFAULTS.masking
    parser.add_argument("--mask-rate", type=_rate, default=d.rate,
                        help=f"share of tokens predicted, in (0, 1) (default: {d.rate})")
    parser.add_argument("--mask-shares", metavar="MASK,RANDOM", default=f"{d.mask},{d.random}",
                        help=f"of the predicted tokens, the shares shown as [MASK] and as a "
                             f"random token; the rest are unchanged (default: "
                             f"{d.mask},{d.random})")


def _masking(args: argparse.Namespace) -> MaskingRates:
    try:
        mask, random = (float(part) for part in args.mask_shares.split(","))
    except ValueError:
        raise InputError(f"--mask-shares must be two numbers MASK,RANDOM (e.g. 0.8,0.1), got "
                         f"{args.mask_shares[:40]!r}.") from None
    return MaskingRates(args.mask_rate, mask, random)


def _add_pretrain(subparsers) -> None:
    d = DEFAULTS
    parser = subparsers.add_parser(
        "pretrain", help="masked-LM pretraining, one or many processes",
        description="Pretrain (or continue pretraining) a masked-LM checkpoint on text corpora. "
                    "Defaults are MosaicBERT's recipe. Launch with torchrun for several "
                    "processes or machines.")
    parser.add_argument("--model", required=True, metavar="DIR",
                        help="starting masked-LM checkpoint (e.g. from `mosaic-encoder init`)")
    parser.add_argument("--data", required=True, nargs="+", metavar="FILE",
                        help=".txt (a document a line), .jsonl or .parquet corpora; files are "
                             "sampled in proportion to their size")
    parser.add_argument("--output", required=True, metavar="DIR",
                        help="run directory: final model at the top, checkpoints/ and log.jsonl")
    parser.add_argument("--steps", required=True, type=positive_int, help="optimizer steps")
    parser.add_argument("--eval-data", metavar="FILE",
                        help="held-out corpus: masked-LM loss at the start, every --eval-every "
                             "steps and at the end")
    parser.add_argument("--field", default=d.field,
                        help=f"text field (.jsonl) or column (.parquet) (default: {d.field})")
    _add_masking(parser)
    parser.add_argument("--lr", type=float, default=d.learning_rate,
                        help=f"peak AdamW learning rate (default: {d.learning_rate})")
    parser.add_argument("--weight-decay", type=float, default=d.weight_decay,
                        help=f"AdamW weight decay (default: {d.weight_decay})")
    parser.add_argument("--warmup-ratio", type=float, default=d.warmup_ratio,
                        help=f"share of steps of linear warm-up, then linear decay (default: "
                             f"{d.warmup_ratio})")
    parser.add_argument("--batch-size", type=positive_int, default=d.batch_size,
                        help=f"sequences per optimizer step, over all processes (default: "
                             f"{d.batch_size})")
    parser.add_argument("--accumulation", type=positive_int, default=d.accumulation, metavar="N",
                        help="gradient accumulation: each process runs its share in N "
                             "micro-batches (default: 1)")
    parser.add_argument("--max-seq-length", type=positive_int, default=d.max_seq_length,
                        help=f"tokens per packed sequence (default: {d.max_seq_length})")
    parser.add_argument("--max-grad-norm", type=float, default=d.max_grad_norm,
                        help=f"gradient clipping norm (default: {d.max_grad_norm:g})")
    parser.add_argument("--eval-tokens", type=positive_int, default=d.eval_tokens,
                        help=f"held-out tokens per evaluation (default: {d.eval_tokens})")
    add_run_schedule(parser, d)
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --output from its newest checkpoint")
    parser.set_defaults(run=_pretrain)


def config_from_args(args: argparse.Namespace) -> PretrainConfig:
    return PretrainConfig(
        model=Path(args.model), data=tuple(Path(p) for p in args.data), output=Path(args.output),
        steps=args.steps, eval_data=Path(args.eval_data) if args.eval_data else None,
        field=args.field, masking=_masking(args), learning_rate=args.lr,
        weight_decay=args.weight_decay, warmup_ratio=args.warmup_ratio,
        batch_size=args.batch_size, accumulation=args.accumulation,
        max_seq_length=args.max_seq_length, max_grad_norm=args.max_grad_norm,
        eval_tokens=args.eval_tokens, eval_every=args.eval_every, save_every=args.save_every,
        log_every=args.log_every, keep_checkpoints=args.keep_checkpoints, seed=args.seed,
        device=args.device, attention=args.attention, resume=args.resume,
        progress=not args.no_progress)


def _pretrain(args: argparse.Namespace) -> int:
    from .run import pretrain

    result = pretrain(config_from_args(args))
    if result.main:
        scored = [e for e in result.evaluations if e.get("eval_loss") is not None]
        held_out = (f"held-out loss {scored[0]['eval_loss']:.4f} -> "
                    f"{scored[-1]['eval_loss']:.4f}") if len(scored) >= 2 else None
        print(result.summary("pretrained", "masked-LM loss", held_out), file=sys.stderr)
    return 0


def _add_eval(subparsers) -> None:
    parser = subparsers.add_parser(
        "eval-mlm", help="held-out masked-LM loss and accuracy at several lengths",
        description="Score a masked-LM checkpoint on a held-out corpus packed at each length, "
                    "with masks fixed by --seed so that models with the same tokenizer see the "
                    "same masks. Lengths beyond the training length are allowed.")
    parser.add_argument("--model", required=True, metavar="DIR", help="masked-LM checkpoint")
    parser.add_argument("--data", required=True, nargs="+", metavar="FILE",
                        help="held-out .txt, .jsonl or .parquet corpora, read in order")
    parser.add_argument("--lengths", type=length_list, default=length_list(DEFAULT_LENGTHS),
                        help=f"sequence lengths (default: {DEFAULT_LENGTHS})")
    parser.add_argument("--tokens", type=positive_int, default=32768,
                        help="tokens scored per length (default: 32768)")
    parser.add_argument("--field", default="text",
                        help="text field (.jsonl) or column (.parquet)")
    _add_masking(parser)
    parser.add_argument("--seed", type=int, default=0, help="fixes the masks")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    add_attention(parser)
    parser.add_argument("--json", action="store_true", help="a JSON array of rows")
    parser.set_defaults(run=_eval)


def _eval(args: argparse.Namespace) -> int:
    import torch

    from ..tokenizer import TextTokenizer
    from .documents import DocumentFile, check_corpus
    from .evaluation import evaluate_lengths
    from .task import load_masked_lm

    rates = _masking(args)
    files = [DocumentFile.open(path, args.field) for path in args.data]
    check_corpus(files)
    model = load_masked_lm(Path(args.model), compute_device(args.device), args.attention)
    tokenizer = TextTokenizer(Path(args.model) / "tokenizer.json")
    with torch.inference_mode():
        scores = evaluate_lengths(model, tokenizer, files, args.lengths, args.tokens, args.seed,
                                  rates)
    if args.json:
        sys.stdout.write(json.dumps([s.as_dict() for s in scores], indent=2) + "\n")
        return 0
    lines = [f"{'length':>7} {'sequences':>9} {'predicted':>9} {'loss':>8} {'accuracy':>8}"]
    for s in scores:
        if s.loss is None:
            lines.append(f"{s.length:>7} {s.sequences:>9} {s.predicted:>9}  {s.note}")
        else:
            lines.append(f"{s.length:>7} {s.sequences:>9} {s.predicted:>9} {s.loss:>8.4f} "
                         f"{s.accuracy:>8.4f}")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0
