"""Triton kernels for mosaic-encoder."""

from .flash_attn import flash_attn_varlen_alibi

__all__ = ["flash_attn_varlen_alibi"]
