"""The floating-point dtypes the model computes in, by the names the command line and configs use."""

from __future__ import annotations

import torch

from .errors import ConfigError

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16,
                                  "float16": torch.float16}


def resolve_dtype(value: str | torch.dtype, what: str = "dtype") -> torch.dtype:
    """The compute dtype named by ``value`` (a ``torch.dtype`` or one of :data:`DTYPES`' keys).

    Raises :class:`ConfigError` naming ``what`` for anything else (float64, float8, integers, ...).
    """
    if isinstance(value, str) and value in DTYPES:
        return DTYPES[value]
    if isinstance(value, torch.dtype) and value in DTYPES.values():
        return value
    names = ", ".join(DTYPES)
    raise ConfigError(f"{what} {value!r} is not supported; use one of {names}.")
