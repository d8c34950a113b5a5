"""Normalisation layers: the ``norm_type`` registry.

Every normalisation of a model (the embeddings', each residual block's, the pre-LN final one and
the masked-LM head's) is built by :func:`make_norm`, so one config field switches them all. The
modules keep their published names (``LayerNorm``, ``mlp.layernorm``, ``final_layernorm``) whatever
the type: those are checkpoint keys, not descriptions.

- ``layernorm``: ``(x - mean(x)) / sqrt(var(x) + eps) * weight + bias`` over the hidden axis
  (BERT, MosaicBERT);
- ``rmsnorm``: ``x / sqrt(mean(x^2) + eps) * weight``, no centring and no bias (Zhang & Sennrich,
  2019).

A new normalisation is one entry below: a class built as ``cls(hidden_size, eps=eps)`` whose
parameters are ``weight`` (initialised to one) and optionally ``bias`` (zero).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

if TYPE_CHECKING:
    from .config import MosaicConfig

NORMS: dict[str, type[nn.Module]] = {
    "layernorm": nn.LayerNorm,
    "rmsnorm": nn.RMSNorm,
}


def make_norm(config: MosaicConfig) -> nn.Module:
    """The config's normalisation over the hidden axis: (..., H) -> (..., H), in the input's
    dtype."""
    return NORMS[config.norm_type](config.hidden_size, eps=config.layer_norm_eps)


def is_norm(module: nn.Module) -> bool:
    """Whether ``module`` is one of the registered normalisations (for initialisation)."""
    return isinstance(module, tuple(NORMS.values()))
