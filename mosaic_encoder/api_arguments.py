"""Type checks of the Python API's arguments, one line at each public entry point.

A wrong type (an int for a path, a dict for texts, a string for a count) is an
:class:`~mosaic_encoder.errors.ArgumentError` naming the argument, never a ``TypeError`` or
``AttributeError`` from deep inside torch or pathlib. (The command line has its own argument
types in :mod:`mosaic_encoder.arguments`.)
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Iterable, Mapping, Set
from pathlib import Path

import numpy as np

from .errors import ArgumentError, InputError
from .files import short


def _described(value: object) -> str:
    """The type of a wrong value, with the value itself when it is short to print."""
    kind = type(value).__name__
    if isinstance(value, (str, bytes, bytearray)):
        return f"{kind} {short(value[:41], 40, quote=True)}"
    if isinstance(value, numbers.Number):
        return f"{kind} {short(value, 40)}"
    return kind


def path_arg(value: object, name: str) -> Path:
    """A ``str`` or ``os.PathLike`` naming a file or directory, as a ``Path``."""
    if isinstance(value, (str, os.PathLike)):
        path = os.fspath(value)
        if isinstance(path, str):
            return Path(path)
    raise ArgumentError(f"{name} must be a str or pathlib.Path, got {_described(value)}.")


def optional_path_arg(value: object, name: str) -> Path | None:
    """None, or a path as :func:`path_arg`."""
    return None if value is None else path_arg(value, name)


def int_arg(value: object, name: str, low: int = 1) -> int:
    """An integer (not a bool) of at least ``low``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ArgumentError(f"{name} must be an integer, got {_described(value)}.")
    if value < low:
        raise InputError(f"{name} must be at least {low}, got {value}.")
    return int(value)


def optional_int_arg(value: object, name: str, low: int = 1) -> int | None:
    """None, or an integer as :func:`int_arg`."""
    return None if value is None else int_arg(value, name, low)


def flag_arg(value: object, name: str) -> bool:
    """True or False (numpy's booleans included), never a string such as ``"no"``."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise ArgumentError(f"{name} must be True or False, got {_described(value)}.")


def optional_text_arg(value: object, name: str) -> str | None:
    """None or a string."""
    if value is None or isinstance(value, str):
        return value
    raise ArgumentError(f"{name} must be a string, got {_described(value)}.")


def text_list(value: object, name: str) -> list:
    """The texts of a list, tuple or other ordered iterable, as a list.

    A single string, bytes, a mapping and a set are refused: iterating them gives characters,
    ints, keys or an arbitrary order, never the texts meant. The items themselves are checked by
    the tokenizer (each must be a string).
    """
    if isinstance(value, (str, bytes, bytearray, Mapping, Set)) or not isinstance(value, Iterable):
        kind = "a single string (wrap it in a list)" if isinstance(value, str) else \
            _described(value)
        raise ArgumentError(f"{name} must be a list of strings, got {kind}.")
    return list(value)
