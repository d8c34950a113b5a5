"""The names of the floating-point dtypes, as every command and config spells them.

One name per dtype (torch's: ``float32``, ``bfloat16``, ``float16``), and the short forms
``fp32``, ``bf16`` and ``fp16`` accepted wherever a name is, on every command's ``--dtype`` and in
the Python API. Nothing here imports torch, so that command-line parsers build without it.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

DTYPE_NAMES = ("float32", "bfloat16", "float16")
SHORT_NAMES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def canonical_dtype(name: object) -> str | None:
    """The dtype name ``name`` spells (``"bf16"`` -> ``"bfloat16"``), or None for anything else."""
    if not isinstance(name, str):
        return None
    name = name.strip().lower()
    name = SHORT_NAMES.get(name, name)
    return name if name in DTYPE_NAMES else None


def short_dtype(name: str) -> str:
    """The short form of a dtype name (``"bfloat16"`` -> ``"bf16"``)."""
    return next(short for short, full in SHORT_NAMES.items() if full == canonical_dtype(name))


def spellings(choices: Sequence[str] = DTYPE_NAMES) -> str:
    """``choices`` as a help text shows them: ``"float32, bfloat16 (or fp32, bf16)"``."""
    shorts = [short for short, full in SHORT_NAMES.items() if full in choices]
    return ", ".join(choices) + (f" (or {', '.join(shorts)})" if shorts else "")


def dtype_argument(choices: Sequence[str] = DTYPE_NAMES) -> Callable[[str], str]:
    """An argparse ``type``: the name among ``choices`` (canonical names, or extra words such as
    ``auto``) that the given text spells; a usage error naming the choices otherwise."""
    def parse(text: str) -> str:
        name = canonical_dtype(text) or text.strip().lower()
        if name not in choices:
            raise argparse.ArgumentTypeError(f"must be one of {spellings(choices)}, got "
                                             f"{text[:40]!r}")
        return name
    return parse
