"""How the encoder knows where each token is: the ``position_embedding_type`` registry.

A position scheme is a module of the model (``MosaicBertModel.positions``) that owns its
parameters and answers every structural question about positions: whether the embeddings carry
a learned position table, how long an input may be, which config fields belong to it. Once per
forward it turns the batch's packing into one :class:`AttentionPositions`, which every layer's
attention receives:

- ``alibi`` (MosaicBERT): no position embeddings; attention adds ``-slope_h * |i - j|`` to the
  scores (:mod:`.alibi`). Slopes are the published ones, or, with ``alibi_learned_slopes``, a
  parameter initialised to them and kept positive (stored as their logarithm,
  ``positions.log_slopes``);
- ``absolute`` (BERT): a learned table ``embeddings.position_embeddings`` added to the word
  embeddings, so inputs stop at ``max_position_embeddings``; attention has no bias;
- ``rope``: queries and keys rotated by their positions (:mod:`.rotary`, rotate-half convention,
  base ``rope_theta``), attention has no bias;
- ``none``: no position information at all (a bag of tokens, the ablation baseline).

A new scheme is one class here and one line in :data:`POSITION_SCHEMES`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import nn

from .alibi import alibi_slopes
from .rotary import rotary_tables, rotate

if TYPE_CHECKING:
    from .config import MosaicConfig
    from .padding import Packing, PaddedRows


@dataclass(frozen=True)
class AttentionPositions:
    """What attention needs to know of the positions of one batch's packed tokens.

    Attributes:
        slopes: (heads,) float32 ALiBi slopes, or None for no bias.
        cos, sin: (T, head_dim / 2) float32 rotary tables, or None for no rotation.
    """

    slopes: torch.Tensor | None = None
    cos: torch.Tensor | None = None
    sin: torch.Tensor | None = None

    def rotate(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q, k (T, heads, d) rotated by their positions (unchanged without rotary tables)."""
        if self.cos is None:
            return q, k
        return rotate(q, self.cos, self.sin), rotate(k, self.cos, self.sin)


class PositionScheme(nn.Module):
    """Base of the registry's entries: no table, any length, no options, nothing for attention.

    Class attributes an entry may override:
        learned_table: the embeddings add a learned table of ``max_position_embeddings`` rows.
        options: the config fields that configure this scheme (any other scheme's are an
            error in a config that chooses this one).
        limit_field: the config field that bounds the input length, if one does.
    """

    learned_table: ClassVar[bool] = False
    options: ClassVar[tuple[str, ...]] = ()
    limit_field: ClassVar[str | None] = None

    def __init__(self, config: MosaicConfig):
        super().__init__()

    @classmethod
    def longest_input(cls, config: MosaicConfig) -> int | None:
        """Most tokens a sequence may have under ``config``; None: any number."""
        return None

    @classmethod
    def config_problem(cls, config: MosaicConfig) -> str | None:
        """Why ``config`` cannot use this scheme (one phrase), or None."""
        return None

    def forward(self, packing: Packing | PaddedRows) -> AttentionPositions:
        """The batch's :class:`AttentionPositions`, built once per forward."""
        return AttentionPositions()


class AlibiPositions(PositionScheme):
    """ALiBi: a per-head linear distance penalty on the scores; fixed or learned slopes."""

    options = ("alibi_learned_slopes",)

    def __init__(self, config: MosaicConfig):
        super().__init__(config)
        self.num_heads = config.num_attention_heads
        if config.alibi_learned_slopes:
            # The logarithm keeps every slope positive, which the exact windowing relies on.
            self.log_slopes = nn.Parameter(alibi_slopes(self.num_heads).log())
        else:
            self.log_slopes = None

    def _apply(self, fn, recurse=True):
        # The slopes stay float32 in a model of any dtype: ALiBi's bias is computed in float32
        # (the kernel requires it), and a bfloat16 slope would move the bias by up to 0.4 %.
        super()._apply(fn, recurse)
        if self.log_slopes is not None and self.log_slopes.dtype != torch.float32:
            self.log_slopes.data = self.log_slopes.data.to(torch.float32)
        return self

    def slopes(self, device: torch.device) -> torch.Tensor:
        """(heads,) float32 slopes: the published ones, or the learned ones (differentiable)."""
        if self.log_slopes is None:
            return alibi_slopes(self.num_heads, device=device)
        return self.log_slopes.exp()

    def forward(self, packing: Packing | PaddedRows) -> AttentionPositions:
        return AttentionPositions(slopes=self.slopes(packing.cu_seqlens.device))


class AbsolutePositions(PositionScheme):
    """BERT's learned table, added to the word embeddings (``embeddings.position_embeddings``)."""

    learned_table = True
    limit_field = "max_position_embeddings"

    @classmethod
    def longest_input(cls, config: MosaicConfig) -> int | None:
        return config.max_position_embeddings


class RotaryPositions(PositionScheme):
    """RoPE: queries and keys rotated by position (:mod:`.rotary`), base ``rope_theta``."""

    options = ("rope_theta",)

    def __init__(self, config: MosaicConfig):
        super().__init__(config)
        self.head_dim, self.theta = config.head_dim, config.rope_theta

    @classmethod
    def config_problem(cls, config: MosaicConfig) -> str | None:
        if config.head_dim % 2:
            return (f"rotary positions pair a head's features, so the head size (hidden_size / "
                    f"num_attention_heads = {config.head_dim}) must be even")
        return None

    def forward(self, packing: Packing | PaddedRows) -> AttentionPositions:
        # Computed here, not kept as a buffer: a non-persistent buffer created on the meta
        # device (as loading builds models) would stay there.
        cos, sin = rotary_tables(packing.positions(), self.head_dim, self.theta)
        return AttentionPositions(cos=cos, sin=sin)


class NoPositions(PositionScheme):
    """No position information: attention sees a bag of tokens."""


POSITION_SCHEMES: dict[str, type[PositionScheme]] = {
    "alibi": AlibiPositions,
    "absolute": AbsolutePositions,
    "rope": RotaryPositions,
    "none": NoPositions,
}
