"""The attention kernel as a PyTorch custom operator, so that compiled graphs call it.

``torch.compile`` and ``torch.export`` cannot look inside a Triton launch that reads its
arguments on the host; registered through ``torch.library`` with a fake (shape-only)
implementation, :func:`~.flash_attn.flash_attn_varlen_alibi` becomes one opaque node,
``torch.ops.mosaic_kernels.flash_attn_varlen_alibi``, that the compiled graph keeps calling.

Gradients (for q, k, v and, when they are learned, the ALiBi slopes) flow through a second
operator that recomputes the forward under autograd and differentiates it: one extra forward per
backward, the price of reaching the kernel through its public function only.
"""

from __future__ import annotations

import torch

from .flash_attn import flash_attn_varlen_alibi


@torch.library.custom_op("mosaic_kernels::flash_attn_varlen_alibi", mutates_args=())
def flash_attn_varlen_alibi_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                               cu_seqlens: torch.Tensor, max_seqlen: int,
                               alibi_slopes: torch.Tensor, softmax_scale: float | None = None,
                               window: bool = True) -> torch.Tensor:
    """:func:`~.flash_attn.flash_attn_varlen_alibi` as an operator: same arguments, same result.

    q, k, v: (T, heads, head_dim); cu_seqlens: (B + 1,) int32; alibi_slopes: (heads,) float32.
    Returns a new contiguous (T, heads, head_dim) tensor in q's dtype.
    """
    if q.shape[0] == 0:  # no token: nothing to launch
        return q.new_empty(q.shape)
    return flash_attn_varlen_alibi(q, k, v, cu_seqlens, max_seqlen, alibi_slopes,
                                   softmax_scale=softmax_scale, window=window)


@flash_attn_varlen_alibi_op.register_fake
def _(q, k, v, cu_seqlens, max_seqlen, alibi_slopes, softmax_scale=None, window=True):
    return q.new_empty(q.shape)


@torch.library.custom_op("mosaic_kernels::flash_attn_varlen_alibi_backward", mutates_args=())
def _backward_op(grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                 cu_seqlens: torch.Tensor, max_seqlen: int, alibi_slopes: torch.Tensor,
                 softmax_scale: float | None, window: bool, slope_grad: bool
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dq, dk, dv, dslopes) of the forward at (q, k, v, slopes) for the output gradient
    ``grad_out``; ``dslopes`` is zeros unless ``slope_grad``."""
    if q.shape[0] == 0:
        return (q.new_zeros(q.shape), k.new_zeros(k.shape), v.new_zeros(v.shape),
                alibi_slopes.new_zeros(alibi_slopes.shape))
    with torch.enable_grad():
        leaves = [t.detach().requires_grad_(True) for t in (q, k, v)]
        slopes = alibi_slopes.detach().requires_grad_(slope_grad)
        out = flash_attn_varlen_alibi(*leaves, cu_seqlens, max_seqlen, slopes,
                                      softmax_scale=softmax_scale, window=window)
        grads = torch.autograd.grad(out, leaves + [slopes] * slope_grad, grad_out)
    dslopes = grads[3] if slope_grad else alibi_slopes.new_zeros(alibi_slopes.shape)
    return grads[0], grads[1], grads[2], dslopes


@_backward_op.register_fake
def _(grad_out, q, k, v, cu_seqlens, max_seqlen, alibi_slopes, softmax_scale, window, slope_grad):
    return (q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape),
            alibi_slopes.new_empty(alibi_slopes.shape))


def _setup_context(ctx, inputs, output):
    q, k, v, cu_seqlens, max_seqlen, alibi_slopes, softmax_scale, window = inputs
    ctx.save_for_backward(q, k, v, cu_seqlens, alibi_slopes)
    ctx.max_seqlen, ctx.softmax_scale, ctx.window = max_seqlen, softmax_scale, window


def _backward(ctx, grad_out):
    q, k, v, cu_seqlens, alibi_slopes = ctx.saved_tensors
    slope_grad = ctx.needs_input_grad[5]
    dq, dk, dv, dslopes = _backward_op(grad_out, q, k, v, cu_seqlens, ctx.max_seqlen,
                                       alibi_slopes, ctx.softmax_scale, ctx.window, slope_grad)
    return dq, dk, dv, None, None, dslopes if slope_grad else None, None, None


flash_attn_varlen_alibi_op.register_autograd(_backward, setup_context=_setup_context)
