"""Position-wise feed-forward blocks: the ``feed_forward`` registry.

Each block maps (T, H) -> (T, H), its residual and normalisation included (placed as
``layer_norm_position`` says, :mod:`.residual`), and sits at ``encoder.layer.N.mlp``:

- ``glu`` (MosaicBERT): ``wo(gelu(gate) * value)`` with ``[gate | value] = gated_layers(x)``:
  ``gated_layers`` (H -> 2I, no bias), the FIRST I outputs the gate, the second I the value; GELU
  in its exact erf form, as upstream computes it;
- ``swiglu``: the same with a SiLU gate, ``silu(g) = g * sigmoid(g)`` (Shazeer, 2020);
- ``gelu`` (classic BERT): ``output.dense(gelu(intermediate.dense(x)))``, H -> I -> H, its parts
  under BERT's names ``encoder.layer.N.intermediate`` and ``encoder.layer.N.output``
  (:attr:`FeedForward.stored_beside_attention`).

``hidden_act`` in a config must name the block's activation (``hidden_act`` below) or be absent:
it selects nothing by itself.

A new feed-forward is one class here and one line in :data:`FEED_FORWARDS`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .normalization import make_norm
from .residual import PLACEMENTS, ResidualOutput

if TYPE_CHECKING:
    from .config import MosaicConfig


class FeedForward(nn.Module):
    """Base of the registry's entries.

    Class attributes:
        hidden_act: the names of its activation that a config's ``hidden_act`` may give (the
            first is the canonical one).
        stored_beside_attention: the block's children are the layer's own, beside
            ``attention`` (``encoder.layer.N.<child>``) instead of under ``mlp.``: classic
            BERT's published names (:class:`~mosaic_encoder.layers.EncoderLayer`).
        intermediate_weight: (the stored name of a weight within the layer, rows per
            intermediate unit): how a checkpoint's shapes give ``intermediate_size`` before a
            model is built.
    """

    hidden_act: ClassVar[tuple[str, ...]]
    stored_beside_attention: ClassVar[bool] = False
    intermediate_weight: ClassVar[tuple[str, int]]

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden: (T, H) -> (T, H)."""
        raise NotImplementedError


class GatedFeedForward(FeedForward):
    """``wo(act(gate) * value)`` with ``[gate | value] = gated_layers(x)``, residual and norm."""

    intermediate_weight = ("mlp.gated_layers.weight", 2)

    def __init__(self, config: MosaicConfig):
        super().__init__()
        self.placement = PLACEMENTS[config.layer_norm_position]
        self.intermediate_size = config.intermediate_size
        self.gated_layers = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=False)
        self.wo = nn.Linear(config.intermediate_size, config.hidden_size)
        self.layernorm = make_norm(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    @staticmethod
    def activation(gate: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def gated(self, hidden: torch.Tensor) -> torch.Tensor:
        """(T, H) -> (T, H): the block without its residual and norm."""
        gate, value = self.gated_layers(hidden).split(self.intermediate_size, dim=-1)
        return self.dropout(self.wo(self.activation(gate) * value))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.placement.residual(self.layernorm, self.gated, hidden)


class GeluGLU(GatedFeedForward):
    """MosaicBERT's GLU: GELU gate, exact erf form."""

    hidden_act = ("gelu",)

    @staticmethod
    def activation(gate: torch.Tensor) -> torch.Tensor:
        return F.gelu(gate)


class SwiGLU(GatedFeedForward):
    """SiLU-gated linear unit."""

    hidden_act = ("silu", "swish")

    @staticmethod
    def activation(gate: torch.Tensor) -> torch.Tensor:
        return F.silu(gate)


class Intermediate(nn.Module):
    """Classic BERT's expansion: ``gelu(dense(x))``, H -> I."""

    def __init__(self, config: MosaicConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(hidden))


class ClassicFeedForward(FeedForward):
    """BERT's two-layer MLP: ``output.dense(gelu(intermediate.dense(x)))``, residual and norm in
    ``output``."""

    hidden_act = ("gelu",)
    stored_beside_attention = True
    intermediate_weight = ("intermediate.dense.weight", 1)

    def __init__(self, config: MosaicConfig):
        super().__init__()
        self.intermediate = Intermediate(config)
        self.output = ResidualOutput(config, in_features=config.intermediate_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.output(hidden, self.intermediate)


FEED_FORWARDS: dict[str, type[FeedForward]] = {
    "glu": GeluGLU,
    "swiglu": SwiGLU,
    "gelu": ClassicFeedForward,
}
