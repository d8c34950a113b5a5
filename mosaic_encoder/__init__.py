"""mosaic-encoder: hand-written MosaicBERT / lodestone encoders that load the published weights.

The public names are imported when first used (PEP 562), so that ``import mosaic_encoder`` and
the command line's help and usage errors run without importing torch.
"""

__version__ = "0.1.0"

from .errors import CheckpointError, ConfigError, InputError, MosaicError

# Public name -> the submodule that defines it.
_LAZY = {"MosaicConfig": "config", "load_model": "loading", "EncoderOutput": "models",
         "MosaicBertForMaskedLM": "models", "MosaicBertModel": "models",
         "SentenceEncoder": "sentence", "to_sentence_transformer": "st_module",
         "MosaicEncoderModule": "st_module"}
_SUBMODULES = ("convert", "verify")


def __getattr__(name: str):
    import importlib

    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["CheckpointError", "ConfigError", "EncoderOutput", "InputError", "MosaicBertForMaskedLM",
           "MosaicBertModel", "MosaicConfig", "MosaicError", "SentenceEncoder", "__version__",
           "convert", "load_model", "to_sentence_transformer", "verify"]
