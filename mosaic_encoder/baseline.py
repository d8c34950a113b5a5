"""An upstream-style dense implementation, kept as a yardstick, not for use.

It computes what upstream's PyTorch path computes, the way upstream does: on the padded batch,
with a (heads, N, N) float32 ALiBi bias materialised once for N = ``alibi_starting_size`` (grown
when a longer batch arrives), a -10000 additive key mask, and a dense (B, heads, S, S) score
tensor per layer. It reuses the parameters of a :class:`MosaicBertModel`, so the two can be
compared on the same weights: the benchmarks time it as the baseline, and the tests use its
error in a low-precision dtype as the bound our implementation must meet.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .alibi import alibi_bias, alibi_slopes
from .models import MosaicBertModel


class UpstreamStyleEncoder:
    """Dense padded forward over ``model``'s weights.

    Args:
        model: the model whose parameters to use (any dtype, any device).
        alibi_starting_size: N of the bias built at construction, as upstream's config says.
    """

    def __init__(self, model: MosaicBertModel, alibi_starting_size: int = 512):
        if not model.config.uses_alibi:
            raise ValueError("the upstream-style baseline reproduces MosaicBERT (ALiBi) models only.")
        self.model = model
        device = next(model.parameters()).device
        self.slopes = alibi_slopes(model.config.num_attention_heads, device=device)
        self.bias = self._build_bias(alibi_starting_size)

    def _build_bias(self, size: int) -> torch.Tensor:
        positions = torch.arange(size, device=self.slopes.device)
        return alibi_bias(self.slopes, positions, positions)

    @torch.no_grad()
    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                 token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """(B, S) integer inputs -> last hidden state (B, S, H), zeros at padded positions."""
        model, config = self.model, self.model.config
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        batch, seqlen = input_ids.shape
        if seqlen > self.bias.shape[-1]:
            self.bias = self._build_bias(seqlen)
        key_mask = (1.0 - attention_mask[:, None, None, :].float()) * -10000.0
        bias = self.bias[:, :seqlen, :seqlen] + key_mask  # (B, heads, S, S) float32
        hidden = model.embeddings(input_ids, token_type_ids)
        heads, head_dim = config.num_attention_heads, config.head_dim
        for layer in model.encoder.layer:
            qkv = layer.attention.self.Wqkv(hidden).view(batch, seqlen, 3, heads, head_dim)
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (B, heads, S, d) each
            scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(head_dim) + bias
            probs = F.softmax(scores, dim=-1).to(v.dtype)
            attn = torch.matmul(probs, v).transpose(1, 2).reshape(batch, seqlen, -1)
            hidden = layer.feed_forward(layer.attention.output(attn, hidden))
        return hidden * attention_mask[..., None].to(hidden.dtype)
