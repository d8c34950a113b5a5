"""mosaic-encoder: hand-written MosaicBERT / lodestone encoders that load the published weights."""

__version__ = "0.1.0"

from . import convert, verify
from .config import MosaicConfig
from .errors import CheckpointError, ConfigError, InputError, MosaicError
from .loading import load_model
from .models import EncoderOutput, MosaicBertForMaskedLM, MosaicBertModel
from .sentence import SentenceEncoder


def __getattr__(name: str):
    # sentence-transformers is optional: import it only when its bridge is asked for.
    if name in ("to_sentence_transformer", "MosaicEncoderModule"):
        from . import st_module

        return getattr(st_module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["CheckpointError", "ConfigError", "EncoderOutput", "InputError", "MosaicBertForMaskedLM",
           "MosaicBertModel", "MosaicConfig", "MosaicError", "SentenceEncoder", "__version__",
           "convert", "load_model", "to_sentence_transformer", "verify"]
