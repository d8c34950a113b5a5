"""Command-line argument types and option groups shared by every ``mosaic-encoder`` subcommand.

Each type turns a bad value into one sentence: an ``argparse.ArgumentTypeError`` (usage error,
exit 2) for the malformed, an :class:`~mosaic_encoder.errors.InputError` (exit 1) for values that
parse but cannot be used on this machine.
"""

from __future__ import annotations

import argparse

import torch

from .config import ATTENTION_IMPLS
from .devices import resolve_device
from .dtypes import DTYPES
from .errors import InputError
from .tokenizer import MAX_LENGTH


def positive_int(text: str) -> int:
    """An integer >= 1."""
    return _int_at_least(text, 1, "a positive integer")


def count(text: str) -> int:
    """An integer >= 0."""
    return _int_at_least(text, 0, "an integer >= 0")


def _int_at_least(text: str, low: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {what}, got {text[:40]!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be {what}, got {value}")
    return value


def length_list(text: str) -> list[int]:
    """``--lengths``: comma-separated integers, each at least 2 ([CLS] and [SEP])."""
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        values = []
    if not values or min(values) < 2:
        raise argparse.ArgumentTypeError(f"must be comma-separated lengths of at least 2, got "
                                         f"{text[:40]!r}")
    return values


def max_seq_length(text: str | None) -> int | None:
    """``--max-seq-length``: at least 2 ([CLS] and [SEP]), at most what int32 offsets hold."""
    if text is None:
        return None
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not 2 <= value <= MAX_LENGTH:
        raise InputError(f"--max-seq-length must be an integer from 2 to {MAX_LENGTH:,} "
                         f"(room for [CLS] and [SEP]), got {text[:40]!r}.")
    return value


def compute_device(name: str) -> torch.device:
    """``--device``: cpu or cuda[:N], present on this machine."""
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise InputError(f"--device {name[:40]!r} is not a device name (e.g. cpu, cuda, "
                         f"cuda:1).") from None
    if device.type not in ("cpu", "cuda"):
        raise InputError(f"--device {name} is not supported; the model runs on cpu or cuda.")
    return resolve_device(device, what="--device")


def add_runtime(parser: argparse.ArgumentParser) -> None:
    """``--dtype``, ``--device`` (checked by :func:`compute_device` when used), ``--attention``."""
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N (default: cpu)")
    parser.add_argument("--attention", choices=ATTENTION_IMPLS, default="auto")


def add_embedding_batches(parser: argparse.ArgumentParser) -> None:
    """``--batch-size``, ``--max-tokens`` and ``--max-seq-length`` of sentence embedding."""
    parser.add_argument("--batch-size", type=positive_int, default=32,
                        help="texts per batch (default: 32)")
    parser.add_argument("--max-tokens", type=positive_int, default=None, metavar="N",
                        help="token budget: at most N padded tokens per batch")
    parser.add_argument("--max-seq-length", metavar="N", default=None,
                        help="truncate longer inputs (default: the checkpoint's)")


def add_run_schedule(parser: argparse.ArgumentParser, defaults) -> None:
    """The options every training command shares: ``--eval-every``, ``--save-every``,
    ``--log-every``, ``--keep-checkpoints``, ``--seed``, ``--device``, ``--attention`` and
    ``--no-progress``, with defaults read from ``defaults`` (a config with those fields)."""
    d = defaults
    parser.add_argument("--eval-every", type=count, default=d.eval_every, metavar="STEPS")
    parser.add_argument("--save-every", type=count, default=d.save_every, metavar="STEPS",
                        help=f"checkpoint interval (default: {d.save_every}; 0: only at the end)")
    parser.add_argument("--log-every", type=positive_int, default=d.log_every, metavar="STEPS")
    parser.add_argument("--keep-checkpoints", type=positive_int, default=d.keep_checkpoints)
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--device", default=d.device,
                        help="cpu or cuda (under torchrun each process takes its local GPU)")
    parser.add_argument("--attention", choices=ATTENTION_IMPLS, default=d.attention)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
