"""An upstream-style dense implementation, kept as a yardstick, not for use.

It computes what upstream's PyTorch path computes, the way upstream does: on the padded batch,
with a (heads, N, N) float32 ALiBi bias materialised once for N = ``alibi_starting_size`` (grown
when a longer batch arrives), a -10000 additive key mask, and a dense (B, heads, S, S) score
tensor per layer. It reuses the parameters of a :class:`MosaicBertModel`, so the two can be
compared on the same weights: the benchmarks time it as the baseline (whole model, and its
attention alone as the ``naive`` attention), and the tests use its error in a low-precision
dtype as the bound our implementation must meet.

The bias stays float32 whatever the model's dtype: the score products run in the input dtype
and the bias is added in float32 (type promotion), as upstream does. Rounded to bfloat16, a bias
of -1000 would move by 4 and the comparison would measure the rounding, not the attention.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .alibi import alibi_bias
from .models import MosaicBertModel
from .positions import AlibiPositions

KEY_MASK_VALUE = -10000.0  # upstream's additive mask on padded keys


class AlibiTable:
    """Upstream's (heads, N, N) float32 ALiBi bias, built ahead and rebuilt when outgrown.

    Args:
        slopes: (heads,) float32 ALiBi slopes; the table lives on their device.
        starting_size: N at construction (upstream's ``alibi_starting_size``).
    """

    def __init__(self, slopes: torch.Tensor, starting_size: int):
        self.slopes = slopes
        self.table = self._build(starting_size)

    def _build(self, size: int) -> torch.Tensor:
        positions = torch.arange(size, device=self.slopes.device)
        return alibi_bias(self.slopes, positions, positions)

    @property
    def nbytes(self) -> int:
        """Bytes the table holds (the baseline's state, reported by the benchmarks)."""
        return self.table.numel() * self.table.element_size()

    def grow(self, size: int) -> None:
        """Rebuild the table for N = ``size`` if it is smaller, as upstream does."""
        if size > self.table.shape[-1]:
            self.table = self._build(size)

    def bias(self, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, S) 0/1 key mask -> (B, heads, S, S) float32: ALiBi plus -10000 on padded keys."""
        seqlen = attention_mask.shape[-1]
        self.grow(seqlen)
        key_mask = (1.0 - attention_mask[:, None, None, :].float()) * KEY_MASK_VALUE
        return self.table[:, :seqlen, :seqlen] + key_mask


def dense_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                    bias: torch.Tensor) -> torch.Tensor:
    """``softmax(q k^T / sqrt(d) + bias) v`` on a padded batch, upstream's way.

    q, k, v: (B, heads, S, d) in any float dtype; bias: (B, heads, S, S) float32. The products
    run in the input dtype, the bias add and the softmax in float32, and the probabilities are
    cast back to the input dtype for ``P V``. Returns (B, heads, S, d) in v's dtype.
    """
    scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(q.shape[-1]) + bias
    probs = F.softmax(scores, dim=-1).to(v.dtype)
    return torch.matmul(probs, v)


class UpstreamStyleEncoder:
    """Dense padded forward over ``model``'s weights.

    Args:
        model: the model whose parameters to use (any dtype, any device).
        alibi_starting_size: N of the bias built at construction, as upstream's config says.
    """

    def __init__(self, model: MosaicBertModel, alibi_starting_size: int = 512):
        if not isinstance(model.positions, AlibiPositions):
            raise ValueError("the upstream-style baseline reproduces ALiBi models only.")
        self.model = model
        device = next(model.parameters()).device
        self.alibi = AlibiTable(model.positions.slopes(device).detach(), alibi_starting_size)

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
        bias = self.alibi.bias(attention_mask)
        hidden = model.embeddings(input_ids, token_type_ids)
        heads, head_dim = config.num_attention_heads, config.head_dim
        for layer in model.encoder.layer:
            def attend(x: torch.Tensor, layer=layer) -> torch.Tensor:
                qkv = layer.attention.self.Wqkv(x).view(batch, seqlen, 3, heads, head_dim)
                q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (B, heads, S, d) each
                return dense_attention(q, k, v, bias).transpose(1, 2).reshape(batch, seqlen, -1)

            hidden = layer.mlp(layer.attention.output(hidden, attend))
        if model.encoder.final_layernorm is not None:
            hidden = model.encoder.final_layernorm(hidden)
        return hidden * attention_mask[..., None].to(hidden.dtype)
