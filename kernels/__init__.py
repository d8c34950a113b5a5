"""Triton kernels for mosaic-encoder.

Folder ``kernels/`` (the design card's layout), imported as ``mosaic_kernels``: setup.cfg maps
the one onto the other, because a top-level package named ``kernels`` would clash with PyPI's
``kernels``. Grep for ``mosaic_kernels`` to find users, for ``kernels/`` to find files.

A leaf package: it imports torch and triton only. The modules come in pieces, so that the CPU
path never loads Triton:

- ``windowing``: the exact ALiBi window bound and its block plan, plain PyTorch;
- ``reference``: the plain-PyTorch specification of the attention the kernels compute;
- ``tuning``: block-size configs and autotuning (imports triton);
- ``flash_attn``: the kernels and :func:`flash_attn_varlen_alibi` (imports triton).

``from mosaic_kernels import flash_attn_varlen_alibi`` loads Triton on first use only.
"""

__all__ = ["flash_attn_varlen_alibi"]


def __getattr__(name):
    if name == "flash_attn_varlen_alibi":
        from .flash_attn import flash_attn_varlen_alibi
        return flash_attn_varlen_alibi
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
