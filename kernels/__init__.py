"""Triton kernels for mosaic-encoder, installed as ``mosaic_kernels``.

A leaf package: it imports torch and triton only. ``reference`` is the plain-PyTorch
specification of the attention the kernels compute.
"""

from .flash_attn import flash_attn_varlen_alibi

__all__ = ["flash_attn_varlen_alibi"]
