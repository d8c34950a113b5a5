"""mosaic-encoder: hand-written MosaicBERT / lodestone encoders that load the published weights."""

from .config import MosaicConfig
from .errors import CheckpointError, ConfigError, InputError, MosaicError
from .loading import load_model
from .models import EncoderOutput, MosaicBertForMaskedLM, MosaicBertModel

__all__ = ["CheckpointError", "ConfigError", "EncoderOutput", "InputError", "MosaicBertForMaskedLM",
           "MosaicBertModel", "MosaicConfig", "MosaicError", "load_model"]
