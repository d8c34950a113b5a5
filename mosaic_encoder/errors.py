"""Exceptions a user can hit, each carrying one sentence that names the file or field at fault.

The command line catches :class:`MosaicError` and prints its message without a traceback; any other
exception is a bug in this package.
"""


class MosaicError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(MosaicError, ValueError):
    """A ``config.json`` (or a config value) describes an impossible or unsupported model."""


class CheckpointError(MosaicError):
    """A checkpoint directory or weights file is missing, unreadable, or does not match the model."""


class InputError(MosaicError, ValueError):
    """Input given to the model or the encoder (token ids, masks, texts) is malformed."""


class ArgumentError(InputError, TypeError):
    """A Python API argument has the wrong type (a dict for texts, a string for a count); a
    ``TypeError`` as well, for callers that catch one."""


class NonFiniteError(MosaicError):
    """A model computed NaN or infinity from weights that loaded as finite: they overflow in the
    compute dtype (float16 holds at most 65504) or are corrupt. Nothing is returned or written."""


# How every NonFiniteError's sentence ends.
NON_FINITE_ADVICE = ("the weights overflow in this dtype or are corrupt, so nothing is returned or "
                     "written (try float32, and mosaic-encoder verify on the checkpoint)")


class TrainingError(MosaicError):
    """A training run cannot go on (a non-finite loss or gradient); its last good state is kept."""


def check_ranges(settings: object, checks: dict[str, bool], what: str = "training") -> None:
    """Raise :class:`InputError` naming the first field of ``settings`` whose check is False:
    ``"<what> setting <field> = <value> is out of range."``"""
    for name, ok in checks.items():
        if not ok:
            raise InputError(f"{what} setting {name} = {getattr(settings, name)!r} is out of "
                             f"range.")
