"""Float64 reference computations the tests compare against."""

import math

import torch

from mosaic_encoder.alibi import alibi_bias


def attention_oracle(q, k, v, cu_seqlens, slopes, softmax_scale=None):
    """Variable-length ALiBi attention in float64, one sequence at a time.

    q, k, v: (T, heads, d) any dtype; returns (T, heads, d) float64.
    """
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(q.shape[-1])
    q, k, v = q.double(), k.double(), v.double()
    out = torch.zeros_like(q)
    bounds = cu_seqlens.tolist()
    for start, end in zip(bounds[:-1], bounds[1:]):
        if end == start:
            continue
        positions = torch.arange(end - start, device=q.device)
        bias = alibi_bias(slopes, positions, positions).double()
        scores = torch.einsum("ihd,jhd->hij", q[start:end], k[start:end]) * scale + bias
        out[start:end] = torch.einsum("hij,jhd->ihd", scores.softmax(-1), v[start:end])
    return out
