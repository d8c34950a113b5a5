"""Residual blocks: the ``layer_norm_position`` registry and the block output they share.

A residual block adds a sublayer ``f`` (attention, or a feed-forward) to its input ``x``; the
placement decides where the block's normalisation sits:

- ``post``: ``norm(x + f(x))``, BERT and MosaicBERT as published;
- ``pre``: ``x + f(norm(x))``, with one more normalisation after the last layer
  (``encoder.final_layernorm``): pre-LN layers let their output's scale grow with depth, and the
  heads expect normalised states.

The same norm module serves both placements, so the checkpoint keys do not depend on it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, ClassVar

import torch
from torch import nn

from .normalization import make_norm

if TYPE_CHECKING:
    from .config import MosaicConfig

Sublayer = Callable[[torch.Tensor], torch.Tensor]


class Placement:
    """Base of the registry's entries: where the norm sits, as the two halves of a residual
    block around its sublayer, so that a caller may run the sublayer itself (as regional
    compilation does around attention, :mod:`.regions`)."""

    final_norm: ClassVar[bool]

    @staticmethod
    def sublayer_input(norm: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        """What the sublayer reads."""
        raise NotImplementedError

    @staticmethod
    def combine(norm: nn.Module, hidden: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """The block's output from its input ``hidden`` and the sublayer's output ``out``."""
        raise NotImplementedError

    @classmethod
    def residual(cls, norm: nn.Module, sublayer: Sublayer, hidden: torch.Tensor) -> torch.Tensor:
        return cls.combine(norm, hidden, sublayer(cls.sublayer_input(norm, hidden)))


class PostNorm(Placement):
    """``norm(x + f(x))``."""

    final_norm = False

    @staticmethod
    def sublayer_input(norm: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        return hidden

    @staticmethod
    def combine(norm: nn.Module, hidden: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        return norm(hidden + out)


class PreNorm(Placement):
    """``x + f(norm(x))``, and a final norm after the last layer."""

    final_norm = True

    @staticmethod
    def sublayer_input(norm: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        return norm(hidden)

    @staticmethod
    def combine(norm: nn.Module, hidden: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        return hidden + out


PLACEMENTS: dict[str, type[Placement]] = {
    "post": PostNorm,
    "pre": PreNorm,
}


class ResidualOutput(nn.Module):
    """A sublayer's projection back to H, dropout, the residual and the norm, placed as the
    config says: ``norm(x + dropout(dense(f(x))))`` post-LN, ``x + dropout(dense(f(norm(x))))``
    pre-LN.

    Used after attention (``f``: (T, H) -> (T, H)) and after the classic feed-forward's expansion
    (``f``: (T, H) -> (T, I), ``in_features=I``). The names (``dense``, ``LayerNorm``) are the
    published ones.
    """

    def __init__(self, config: MosaicConfig, in_features: int | None = None):
        super().__init__()
        self.placement = PLACEMENTS[config.layer_norm_position]
        self.dense = nn.Linear(in_features or config.hidden_size, config.hidden_size)
        self.LayerNorm = make_norm(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def sublayer_input(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden: (T, H) -> what the sublayer reads, (T, H)."""
        return self.placement.sublayer_input(self.LayerNorm, hidden)

    def close(self, hidden: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """The block's output (T, H) from its input ``hidden`` (T, H) and the sublayer's output
        ``out`` (T, in_features)."""
        return self.placement.combine(self.LayerNorm, hidden, self.dropout(self.dense(out)))

    def forward(self, hidden: torch.Tensor, sublayer: Sublayer) -> torch.Tensor:
        """hidden: (T, H) -> (T, H)."""
        return self.close(hidden, sublayer(self.sublayer_input(hidden)))
