"""Fresh masked-LM models from a configuration, with BERT's initialisation.

Every linear and embedding weight is drawn from N(0, 0.02²) (the config's ``initializer_range``
sets another standard deviation), biases are zero, normalisation
weights one (and LayerNorm biases zero), and the padding token's embedding row is zero. Learned
ALiBi slopes keep their initial value, the published slopes. The decoder is the word
embedding matrix (tied), so it starts from the same draw.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from ..config import MosaicConfig, read_config_values
from ..errors import ConfigError
from ..files import short
from ..models import MosaicBertForMaskedLM
from ..normalization import is_norm
from ..tokenizer import TextTokenizer
from .model_files import check_new_directory, write_directory

INITIALIZER_RANGE = 0.02


@torch.no_grad()
def initialise(model: nn.Module, generator: torch.Generator, std: float = INITIALIZER_RANGE
               ) -> None:
    """Re-initialise every parameter of ``model`` in place, drawing from ``generator``.

    A weight shared by two modules (the tied decoder) is drawn once, by the first.
    """
    drawn: set[int] = set()
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Embedding)) and id(module.weight) not in drawn:
            drawn.add(id(module.weight))
            module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * std)
            if isinstance(module, nn.Embedding) and module.padding_idx is not None:
                module.weight[module.padding_idx] = 0
        if is_norm(module):
            module.weight.fill_(1)
        if getattr(module, "bias", None) is not None:
            module.bias.zero_()


def new_masked_lm(config: MosaicConfig, seed: int = 0, std: float = INITIALIZER_RANGE
                  ) -> MosaicBertForMaskedLM:
    """A masked-LM model of ``config`` with BERT's initialisation (weights N(0, std^2)), the
    same for the same seed."""
    model = MosaicBertForMaskedLM(config)
    initialise(model, torch.Generator().manual_seed(seed), std)
    model.tie_weights()
    return model


def check_tokenizer_fits(config: MosaicConfig, tokenizer: TextTokenizer, source: str) -> None:
    """A config whose vocabulary cannot hold the tokenizer's ids is a :class:`ConfigError`."""
    if tokenizer.largest_id >= config.vocab_size:
        raise ConfigError(f"{source}: vocab_size {config.vocab_size} is too small for the "
                          f"tokenizer, whose ids reach {tokenizer.largest_id}.")
    if config.pad_token_id != tokenizer.pad_token_id:
        raise ConfigError(f"{source}: pad_token_id {config.pad_token_id} is not the tokenizer's "
                          f"[PAD] id {tokenizer.pad_token_id}.")


def init_checkpoint(config_file: Path, tokenizer_dir: Path, output: Path, seed: int = 0) -> Path:
    """Write a freshly initialised masked-LM checkpoint directory.

    Args:
        config_file: a ``config.json``-style file (geometry and variant fields; its
            ``initializer_range``, if any, is the standard deviation of the initial weights).
        tokenizer_dir: directory with ``tokenizer.json`` (and optionally its companions).
        output: a new or empty directory; written completely or not at all.
        seed: fixes the initial weights.
    Raises:
        ConfigError, CheckpointError, InputError: one sentence naming the file or field.
    """
    values = read_config_values(config_file)
    config = MosaicConfig.from_dict(values, source=f"config file {config_file}")
    std = values.get("initializer_range", INITIALIZER_RANGE)
    if isinstance(std, bool) or not isinstance(std, (int, float)) or not 0 < std < math.inf:
        raise ConfigError(f"config file {config_file}: initializer_range must be a positive "
                          f"finite number, got {short(std, quote=True)}.")
    tokenizer = TextTokenizer(tokenizer_dir / "tokenizer.json")
    check_tokenizer_fits(config, tokenizer, f"config file {config_file}")
    check_new_directory(output)
    write_directory(output, new_masked_lm(config, seed, std), tokenizer_dir, values)
    return output
