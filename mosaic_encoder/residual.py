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


class PostNorm:
    """``norm(x + f(x))``."""

    final_norm: ClassVar[bool] = False

    @staticmethod
    def residual(norm: nn.Module, sublayer: Sublayer, hidden: torch.Tensor) -> torch.Tensor:
        return norm(hidden + sublayer(hidden))


class PreNorm:
    """``x + f(norm(x))``, and a final norm after the last layer."""

    final_norm: ClassVar[bool] = True

    @staticmethod
    def residual(norm: nn.Module, sublayer: Sublayer, hidden: torch.Tensor) -> torch.Tensor:
        return hidden + sublayer(norm(hidden))


PLACEMENTS: dict[str, type[PostNorm] | type[PreNorm]] = {
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

    def forward(self, hidden: torch.Tensor, sublayer: Sublayer) -> torch.Tensor:
        """hidden: (T, H) -> (T, H)."""
        return self.placement.residual(self.LayerNorm,
                                       lambda x: self.dropout(self.dense(sublayer(x))), hidden)
