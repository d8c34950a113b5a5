"""The executable specification of the attention the kernels compute, in plain PyTorch.

Packed variable-length bidirectional multi-head attention with ALiBi. For one sequence of the
batch (rows ``cu_seqlens[b]`` to ``cu_seqlens[b + 1]``), one head with slope ``m``, queries
``i`` and keys ``j`` numbered from 0 within the sequence::

    s_ij  = scale * q_i . k_j - m * |i - j|
    lse_i = log sum_j exp(s_ij)                      (natural log)
    p_ij  = exp(s_ij - lse_i)
    o_i   = sum_j p_ij v_j

and, for an incoming gradient dO::

    dv_j  = sum_i p_ij dO_i
    dp_ij = dO_i . v_j
    ds_ij = p_ij (dp_ij - delta_i),   delta_i = sum_j p_ij dp_ij = dO_i . o_i
    dq_i  = scale * sum_j ds_ij k_j
    dk_j  = scale * sum_i ds_ij q_i

Tokens never attend across sequences; an empty sequence contributes nothing. Everything runs one
sequence and one head at a time, so memory stays at a few (L, L) matrices whatever the number of
heads.

Precision. ``dtype`` is the dtype of the two matrix products; scores, the bias and the softmax
run in ``promote_types(dtype, float32)``, and the probabilities are rounded to ``dtype`` before
``P V``. ``dtype=torch.float64`` (the default) is the oracle; ``dtype=q.dtype`` for a half dtype
is what a careful plain-PyTorch implementation computes in that dtype, the yardstick of
low-precision error.

This module imports only torch: it is the one definition of the attention that the kernel
tests, the benchmark harness and the model's tests compare against.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import NamedTuple

import torch

__all__ = ["Reference", "attention", "attention_with_grads", "scores", "softmax_dtype"]


class Reference(NamedTuple):
    """Outputs and gradients of :func:`attention_with_grads`.

    ``out``, ``dq``, ``dk``, ``dv``: (T, heads, head_dim) in ``dtype``; ``lse``: (heads, T) in
    :func:`softmax_dtype`, natural log (the kernel's layout; it stores base 2).
    """

    out: torch.Tensor
    lse: torch.Tensor
    dq: torch.Tensor
    dk: torch.Tensor
    dv: torch.Tensor


def softmax_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype scores, bias and softmax are computed in when the products run in ``dtype``."""
    return torch.promote_types(dtype, torch.float32)


def _scale(q: torch.Tensor, softmax_scale: float | None) -> float:
    return 1.0 / math.sqrt(q.shape[-1]) if softmax_scale is None else float(softmax_scale)


def _sequences(cu_seqlens: torch.Tensor) -> Iterator[tuple[int, int]]:
    bounds = cu_seqlens.tolist()
    for start, end in zip(bounds[:-1], bounds[1:]):
        if end > start:
            yield start, end


def _scores(q: torch.Tensor, k: torch.Tensor, slope: torch.Tensor, scale: float) -> torch.Tensor:
    """``scale * q k^T - slope * |i - j|`` for one sequence and head: (L, L) in the softmax dtype.

    q, k: (L, head_dim) in the product dtype; slope: 0-d. This is the one place the bias is
    defined.
    """
    scores = (q @ k.T).to(softmax_dtype(q.dtype))
    positions = torch.arange(q.shape[0], device=q.device, dtype=scores.dtype)
    distance = (positions[:, None] - positions[None, :]).abs()
    return scores * scale - slope.to(scores.dtype) * distance


def _check(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor,
           alibi_slopes: torch.Tensor) -> None:
    if q.dim() != 3 or k.shape != q.shape or v.shape != q.shape:
        raise ValueError(f"q, k, v must have the same shape (T, heads, head_dim), got "
                         f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}.")
    if cu_seqlens.dim() != 1 or cu_seqlens.numel() < 1:
        raise ValueError(f"cu_seqlens must be 1-D with B + 1 entries, got shape "
                         f"{tuple(cu_seqlens.shape)}.")
    if alibi_slopes.shape != (q.shape[1],):
        raise ValueError(f"alibi_slopes must have shape ({q.shape[1]},), got "
                         f"{tuple(alibi_slopes.shape)}.")


def scores(q: torch.Tensor, k: torch.Tensor, cu_seqlens: torch.Tensor,
           alibi_slopes: torch.Tensor, softmax_scale: float | None = None, *,
           dtype: torch.dtype = torch.float64) -> Iterator[tuple[int, int, torch.Tensor]]:
    """``(start, end, S)`` for every non-empty sequence: the biased scores ``s_ij``.

    S: (heads, L, L) in the softmax dtype, rows are queries, columns keys;
    ``softmax(S, -1)`` are the attention weights, for error analyses that need them.
    """
    scale = _scale(q, softmax_scale)
    for start, end in _sequences(cu_seqlens):
        yield start, end, torch.stack([
            _scores(q[start:end, h].to(dtype), k[start:end, h].to(dtype), alibi_slopes[h], scale)
            for h in range(q.shape[1])])


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor,
              alibi_slopes: torch.Tensor, softmax_scale: float | None = None, *,
              dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward pass, differentiable through autograd.

    Args:
        q, k, v: (T, heads, head_dim), any float dtype (cast to ``dtype``).
        cu_seqlens: (B + 1,) integer sequence starts, last = T.
        alibi_slopes: (heads,) slopes ``m`` (zeros: plain attention).
        softmax_scale: ``scale``; default ``1 / sqrt(head_dim)``.
        dtype: dtype of the matrix products (see the module docstring).
    Returns:
        ``(out, lse)``: out (T, heads, head_dim) in ``dtype``, zero for no token; lse (heads, T)
        in the softmax dtype, natural log.
    """
    _check(q, k, v, cu_seqlens, alibi_slopes)
    scale = _scale(q, softmax_scale)
    total, heads, _ = q.shape
    q, k, v = (t.to(dtype) for t in (q, k, v))
    out = torch.zeros_like(q)
    lse = torch.zeros(heads, total, dtype=softmax_dtype(dtype), device=q.device)
    for start, end in _sequences(cu_seqlens):
        for h in range(heads):
            scores = _scores(q[start:end, h], k[start:end, h], alibi_slopes[h], scale)
            lse[h, start:end] = torch.logsumexp(scores, dim=-1)
            out[start:end, h] = torch.softmax(scores, dim=-1).to(dtype) @ v[start:end, h]
    return out, lse


def attention_with_grads(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dout: torch.Tensor,
                         cu_seqlens: torch.Tensor, alibi_slopes: torch.Tensor,
                         softmax_scale: float | None = None, *,
                         dtype: torch.dtype = torch.float64) -> Reference:
    """Forward pass and the analytic backward for the incoming gradient ``dout``.

    Arguments as in :func:`attention`; ``dout``: (T, heads, head_dim). No autograd graph is
    built: memory stays at a few (L, L) matrices in ``dtype``.
    """
    _check(q, k, v, cu_seqlens, alibi_slopes)
    if dout.shape != q.shape:
        raise ValueError(f"dout must have q's shape {tuple(q.shape)}, got {tuple(dout.shape)}.")
    scale = _scale(q, softmax_scale)
    total, heads, _ = q.shape
    with torch.no_grad():
        q, k, v, dout = (t.detach().to(dtype) for t in (q, k, v, dout))
        out, dq, dk, dv = (torch.zeros_like(q) for _ in range(4))
        lse = torch.zeros(heads, total, dtype=softmax_dtype(dtype), device=q.device)
        for start, end in _sequences(cu_seqlens):
            for h in range(heads):
                qh, kh, vh, doh = (t[start:end, h] for t in (q, k, v, dout))
                scores = _scores(qh, kh, alibi_slopes[h], scale)
                lse[h, start:end] = torch.logsumexp(scores, dim=-1)
                probs = torch.softmax(scores, dim=-1)
                oh = probs.to(dtype) @ vh
                out[start:end, h] = oh
                dv[start:end, h] = probs.to(dtype).T @ doh
                delta = (doh * oh).sum(-1, keepdim=True).to(probs.dtype)
                dscores = (probs * ((doh @ vh.T).to(probs.dtype) - delta)).to(dtype)
                dq[start:end, h] = scale * (dscores @ kh)
                dk[start:end, h] = scale * (dscores.T @ qh)
    return Reference(out, lse, dq, dk, dv)
