"""What the Triton kernels support, importable without Triton: the attention implementations'
registry (``mosaic_encoder.attention``) declares the kernel's capabilities from here, and
:func:`~.flash_attn.flash_attn_varlen_alibi` checks its arguments against the same values."""

import torch

DTYPES = (torch.float16, torch.bfloat16, torch.float32)
# head_dim is padded to the next power of two, at least 16; 128 is the largest the shipped
# block sizes keep in registers.
HEAD_DIMS = range(16, 129)
