"""Command-line argument types and option groups shared by every ``mosaic-encoder`` subcommand.

Each type turns a bad value into one sentence: an ``argparse.ArgumentTypeError`` (usage error,
exit 2) for the malformed, an :class:`~mosaic_encoder.errors.InputError` (exit 1) for values that
parse but cannot be used on this machine. Nothing here imports torch before a command runs: the
parsers build, and ``--help`` and usage errors answer, without it.
"""

from __future__ import annotations

import argparse
import dataclasses
from types import SimpleNamespace
from typing import TYPE_CHECKING

from .attention_names import ATTENTION_IMPLS
from .dtype_names import DTYPE_NAMES, dtype_argument, spellings
from .errors import InputError

if TYPE_CHECKING:
    import torch


class HelpFormatter(argparse.HelpFormatter):
    """Shows every option's default after its help, unless the help already names it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        shown = action.default not in (None, False, [], argparse.SUPPRESS) and \
            action.option_strings and "default" not in text
        return f"{text} (default: %(default)s)" if shown else text


class CommandParser(argparse.ArgumentParser):
    """The parser of ``mosaic-encoder`` and of each of its (sub)commands.

    An argument a subcommand does not know is a usage error of that subcommand, printed with
    its own usage line (plain argparse hands it up to the top-level parser, which prints the
    top-level usage and leaves the reader to guess where the flag went). Subparsers are
    CommandParsers too, and every help shows the defaults (:class:`HelpFormatter`).
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def add_subparsers(self, **kwargs):
        kwargs.setdefault("parser_class", CommandParser)
        return super().add_subparsers(**kwargs)

    def parse_known_args(self, args=None, namespace=None):
        namespace, rest = super().parse_known_args(args, namespace)
        if rest:
            self.error(f"unrecognized arguments: {' '.join(rest)}")
        return namespace, rest


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
    from .tokenizer import MAX_LENGTH

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
    import torch

    from .devices import resolve_device

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
    add_dtype(parser)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    add_attention(parser)


def add_dtype(parser: argparse.ArgumentParser, choices: tuple[str, ...] = DTYPE_NAMES,
              default: str | None = "float32", help: str = "the dtype the model computes in") \
        -> None:
    """``--dtype``: the same spellings on every command (:mod:`.dtype_names`)."""
    parser.add_argument("--dtype", type=dtype_argument(choices), default=default, metavar="DTYPE",
                        help=f"{help}: {spellings(choices)}")


def add_attention(parser: argparse.ArgumentParser, default: str = "auto") -> None:
    """``--attention``: the attention implementation."""
    parser.add_argument("--attention", choices=ATTENTION_IMPLS, default=default,
                        help="sdpa (PyTorch, chunked), triton (the fused kernel; on a CPU only "
                             "under TRITON_INTERPRET=1) or auto (triton on CUDA, sdpa elsewhere)")


def add_model(parser: argparse.ArgumentParser, what: str = "checkpoint",
              default: str | None = "the bundled random-weight one") -> None:
    """``--model`` (a directory or a Hugging Face Hub id; required without ``default``) and
    ``--revision``."""
    parser.add_argument("--model", metavar="DIR|ORG/NAME", required=default is None,
                        help=f"{what}: a directory, or a Hugging Face Hub id read from the "
                             f"Hugging Face cache or downloaded into it"
                             + (f" (default: {default})" if default else ""))
    add_revision(parser)


def add_revision(parser: argparse.ArgumentParser) -> None:
    """``--revision``: which snapshot of a Hub model."""
    parser.add_argument("--revision", metavar="REV",
                        help="with a Hub id: the branch, tag or commit to read (default: main)")


def add_embedding_batches(parser: argparse.ArgumentParser) -> None:
    """``--batch-size``, ``--max-tokens`` and ``--max-seq-length`` of sentence embedding."""
    parser.add_argument("--batch-size", type=positive_int, default=32, metavar="N",
                        help="texts per batch")
    parser.add_argument("--max-tokens", type=positive_int, default=None, metavar="N",
                        help="token budget: at most N padded tokens per batch")
    parser.add_argument("--max-seq-length", metavar="N", default=None,
                        help="truncate longer inputs (default: the checkpoint's)")


def config_defaults(config_class: type) -> SimpleNamespace:
    """The field defaults of a settings dataclass, read without building one (its checks may
    import torch), for a parser to show."""
    fields = dataclasses.fields(config_class)
    return SimpleNamespace(**{field.name: field.default for field in fields
                              if field.default is not dataclasses.MISSING})


def add_run_schedule(parser: argparse.ArgumentParser, defaults) -> None:
    """The options every training command shares: ``--eval-every``, ``--save-every``,
    ``--log-every``, ``--keep-checkpoints``, ``--seed``, ``--device``, ``--attention`` and
    ``--no-progress``, with defaults read from ``defaults`` (a config with those fields)."""
    d = defaults
    parser.add_argument("--eval-every", type=count, default=d.eval_every, metavar="STEPS",
                        help="held-out evaluation interval (0: only at the start and the end)")
    parser.add_argument("--save-every", type=count, default=d.save_every, metavar="STEPS",
                        help="checkpoint interval (0: only at the end)")
    parser.add_argument("--log-every", type=positive_int, default=d.log_every, metavar="STEPS",
                        help="log.jsonl gets every STEPS-th step's record")
    parser.add_argument("--keep-checkpoints", type=positive_int, default=d.keep_checkpoints,
                        metavar="N", help="checkpoints kept in OUTPUT/checkpoints")
    parser.add_argument("--seed", type=int, default=d.seed,
                        help="fixes the random state: data order, dropout, masks")
    parser.add_argument("--device", default=d.device,
                        help="cpu or cuda (under torchrun each process takes its local GPU)")
    add_attention(parser, d.attention)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
