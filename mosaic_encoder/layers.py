"""The building blocks of a MosaicBERT encoder, all operating on packed tokens (T, H).

Module and parameter names follow the published checkpoints, so ``state_dict`` keys match the
files exactly (``attention.self.Wqkv``, ``mlp.gated_layers``, ``mlp.layernorm``, ...). Every
residual block is post-LayerNorm, ``LayerNorm(sublayer(x) + x)``, as published; a config with
``layer_norm_position: "pre"`` makes each ``x + sublayer(LayerNorm(x))`` with the same LayerNorm
module (so the names stay), and adds ``encoder.final_layernorm`` after the last layer.

The classic BERT design runs through the same modules, chosen by configuration: learned position
embeddings instead of ALiBi, and the GELU feed-forward (``intermediate`` / ``output``) instead of
the GLU. Its separate query/key/value weights are fused into ``Wqkv`` when loading.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .attention import varlen_attention
from .config import MosaicConfig
from .padding import Packing

FEED_FORWARD_BLOCK = 1024  # tokens per feed-forward step


def _embedding(rows: int, dim: int, padding_idx: int | None = None) -> nn.Embedding:
    """``nn.Embedding`` with its usual N(0, 1) initialisation, skipped on the meta device: there
    torch's ``normal_`` imports its compiler (about a second per process) to produce nothing."""
    weight = torch.empty(rows, dim)
    if weight.device.type != "meta":
        with torch.no_grad():
            nn.init.normal_(weight)
            if padding_idx is not None:
                weight[padding_idx] = 0
    return nn.Embedding(rows, dim, padding_idx=padding_idx, _weight=weight)


class Embeddings(nn.Module):
    """``LayerNorm(word[ids] + token_type[type_ids] (+ position[pos]))``.

    MosaicBERT has no position embeddings (ALiBi encodes positions in attention); the classic
    design adds learned ones for positions below ``max_position_embeddings``.
    """

    def __init__(self, config: MosaicConfig):
        super().__init__()
        self.word_embeddings = _embedding(config.vocab_size, config.hidden_size,
                                          padding_idx=config.pad_token_id)
        if not config.uses_alibi:
            self.position_embeddings = _embedding(config.max_position_embeddings,
                                                  config.hidden_size)
        self.token_type_embeddings = _embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor,
                positions: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids, token_type_ids, positions: (...,) int64 -> (..., H).

        ``positions`` (within each sequence) is needed only with learned position embeddings.
        """
        hidden = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
        if hasattr(self, "position_embeddings"):
            hidden = hidden + self.position_embeddings(positions)
        return self.dropout(self.LayerNorm(hidden))


class SelfAttention(nn.Module):
    """Fused QKV projection and variable-length ALiBi attention.

    ``Wqkv`` maps H -> 3H; its output splits as [Q | K | V], and within each, head h owns
    features [h*d, (h+1)*d).
    """

    def __init__(self, config: MosaicConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        self.attention_impl = config.attention_impl
        self.attention_window = config.attention_window
        self.dropout_p = config.attention_probs_dropout_prob
        self.Wqkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)

    def forward(self, hidden: torch.Tensor, packing: Packing,
                slopes: torch.Tensor | None) -> torch.Tensor:
        """hidden: (T, H); slopes: (heads,) float32, None without ALiBi -> (T, H)."""
        tokens = hidden.shape[0]
        qkv = self.Wqkv(hidden).view(tokens, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.unbind(1)  # strided views, no copy
        out = varlen_attention(q, k, v, packing.cu_seqlens, packing.max_seqlen, slopes,
                               impl=self.attention_impl,
                               dropout_p=self.dropout_p if self.training else 0.0,
                               window=self.attention_window)
        return out.reshape(tokens, self.num_heads * self.head_dim)  # -1 fails at T = 0


def _residual(norm: nn.LayerNorm, pre_norm: bool, update: torch.Tensor,
              residual: torch.Tensor) -> torch.Tensor:
    """``norm(update + residual)`` after the sublayer, or ``update + residual`` when ``norm``
    already ran on the sublayer's input (pre-LN)."""
    return update + residual if pre_norm else norm(update + residual)


class ResidualOutput(nn.Module):
    """``LayerNorm(dense(y) + x)``: the projection back to H, residual and post-LayerNorm.

    Used after attention (y: (T, H)) and, in the classic design, after the intermediate
    expansion (y: (T, I), ``in_features=I``). Pre-LN: ``dense(y) + x``, and ``LayerNorm`` is
    what the block applies to its input (:meth:`normed_input`).
    """

    def __init__(self, config: MosaicConfig, in_features: int | None = None):
        super().__init__()
        self.pre_norm = config.layer_norm_position == "pre"
        self.dense = nn.Linear(in_features or config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def normed_input(self, hidden: torch.Tensor) -> torch.Tensor:
        """The block's input as its sublayer sees it: ``LayerNorm(x)`` pre-LN, else ``x``."""
        return self.LayerNorm(hidden) if self.pre_norm else hidden

    def forward(self, attn: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return _residual(self.LayerNorm, self.pre_norm, self.dropout(self.dense(attn)), residual)


class Attention(nn.Module):
    def __init__(self, config: MosaicConfig):
        super().__init__()
        self.self = SelfAttention(config)
        self.output = ResidualOutput(config)

    def forward(self, hidden: torch.Tensor, packing: Packing,
                slopes: torch.Tensor | None) -> torch.Tensor:
        return self.output(self.self(self.output.normed_input(hidden), packing, slopes), hidden)


class GatedMLP(nn.Module):
    """Gated-linear-unit feed-forward: ``LayerNorm(wo(gelu(gate) * value) + x)``.

    ``gated_layers`` (no bias) maps H -> 2I; the first I outputs are the gate, the second I the
    value. GELU is the exact erf form whatever ``hidden_act`` says. Pre-LN, ``layernorm``
    normalises the input instead: ``wo(...(layernorm(x))) + x``.
    """

    def __init__(self, config: MosaicConfig):
        super().__init__()
        self.pre_norm = config.layer_norm_position == "pre"
        self.intermediate_size = config.intermediate_size
        self.gated_layers = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=False)
        self.wo = nn.Linear(config.intermediate_size, config.hidden_size)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden: (T, H) -> (T, H)."""
        normed = self.layernorm(hidden) if self.pre_norm else hidden
        gate, value = self.gated_layers(normed).split(self.intermediate_size, dim=-1)
        return _residual(self.layernorm, self.pre_norm, self.dropout(self.wo(F.gelu(gate) * value)),
                         hidden)


class Intermediate(nn.Module):
    """Classic BERT's expansion: ``gelu(dense(x))``, H -> I."""

    def __init__(self, config: MosaicConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(hidden))


class EncoderLayer(nn.Module):
    """Attention block then feed-forward block: ``mlp`` (GLU) or ``intermediate`` + ``output``
    (classic GELU, ``LayerNorm(dense(gelu(dense(x))) + x)``), as the config says."""

    def __init__(self, config: MosaicConfig):
        super().__init__()
        self.attention = Attention(config)
        if config.feed_forward == "glu":
            self.mlp = GatedMLP(config)
        else:
            self.intermediate = Intermediate(config)
            self.output = ResidualOutput(config, in_features=config.intermediate_size)

    def feed_forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden: (..., H) -> (..., H), residual and LayerNorm included."""
        if hasattr(self, "mlp"):
            return self.mlp(hidden)
        return self.output(self.intermediate(self.output.normed_input(hidden)), hidden)

    def forward(self, hidden: torch.Tensor, packing: Packing,
                slopes: torch.Tensor | None) -> torch.Tensor:
        hidden = self.attention(hidden, packing, slopes)
        if hidden.shape[0] <= FEED_FORWARD_BLOCK:
            return self.feed_forward(hidden)
        # The feed-forward acts on each token alone, so blocks of tokens give the same result
        # while bounding its (tokens, 2I) intermediate (100 MB at 4096 float32 tokens).
        return torch.cat([self.feed_forward(block) for block in hidden.split(FEED_FORWARD_BLOCK)])


class Encoder(nn.Module):
    """The layers, then (pre-LN only) ``final_layernorm``: pre-LN layers leave their output's
    scale to grow with depth, and the head expects normalised states."""

    def __init__(self, config: MosaicConfig):
        super().__init__()
        self.layer = nn.ModuleList(EncoderLayer(config) for _ in range(config.num_hidden_layers))
        if config.layer_norm_position == "pre":
            self.final_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden: torch.Tensor, packing: Packing,
                slopes: torch.Tensor | None) -> torch.Tensor:
        for layer in self.layer:
            hidden = layer(hidden, packing, slopes)
        if hasattr(self, "final_layernorm"):
            hidden = self.final_layernorm(hidden)
        return hidden


class Pooler(nn.Module):
    """``tanh(dense(h[:, 0]))`` on the first token of each sequence."""

    def __init__(self, config: MosaicConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, first_tokens: torch.Tensor) -> torch.Tensor:
        """first_tokens: (B, H) -> (B, H)."""
        return torch.tanh(self.dense(first_tokens))


class MaskedLMTransform(nn.Module):
    """``LayerNorm(gelu(dense(h)))`` before the vocabulary projection."""

    def __init__(self, config: MosaicConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(F.gelu(self.dense(hidden)))


class MaskedLMPredictions(nn.Module):
    """Transform then ``decoder``, whose weight is the word-embedding matrix (tied)."""

    def __init__(self, config: MosaicConfig, word_embeddings: nn.Embedding):
        super().__init__()
        self.transform = MaskedLMTransform(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)
        self.decoder.weight = word_embeddings.weight

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden: (T, H) -> logits (T, V)."""
        return self.decoder(self.transform(hidden))
