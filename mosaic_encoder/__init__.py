"""mosaic-encoder: hand-written MosaicBERT / lodestone encoders that load the published weights."""

__version__ = "0.1.0"

from . import convert, verify
from .config import MosaicConfig
from .errors import CheckpointError, ConfigError, InputError, MosaicError
from .loading import load_model
from .models import EncoderOutput, MosaicBertForMaskedLM, MosaicBertModel
from .sentence import SentenceEncoder

__all__ = ["CheckpointError", "ConfigError", "EncoderOutput", "InputError", "MosaicBertForMaskedLM",
           "MosaicBertModel", "MosaicConfig", "MosaicError", "SentenceEncoder", "convert",
           "load_model", "verify", "__version__"]
