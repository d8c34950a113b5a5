"""The building blocks of an encoder, all operating on packed tokens (T, H).

Module and parameter names follow the published checkpoints, so ``state_dict`` keys match the
files exactly (``attention.self.Wqkv``, ``mlp.gated_layers``, ``mlp.layernorm``, ...). Each design
axis is a registry, chosen by one config field, and looked up in one place:

- positions (``position_embedding_type``): :mod:`.positions`, asked once per forward by the model;
- the feed-forward (``feed_forward``): :mod:`.feed_forward`, at ``encoder.layer.N.mlp``;
- the normalisation (``norm_type``): :mod:`.normalization`;
- its placement around each residual (``layer_norm_position``): :mod:`.residual`.

Classic BERT's separate query/key/value weights are fused into ``Wqkv`` when loading.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .attention import varlen_attention
from .config import MosaicConfig
from .normalization import make_norm
from .padding import Packing, PaddedRows
from .positions import AttentionPositions
from .residual import ResidualOutput

FEED_FORWARD_BLOCK = 1024  # tokens per feed-forward step

LayerRunner = Callable[["EncoderLayer", torch.Tensor, "Packing | PaddedRows", AttentionPositions],
                       torch.Tensor]
# While set (regional compilation sets it around a forward, :mod:`.regions`), the encoder runs
# each layer through it instead of the layer's own forward. Never read while tracing.
LAYER_RUNNER: ContextVar[LayerRunner | None] = ContextVar("LAYER_RUNNER", default=None)


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
    """``norm(word[ids] + token_type[type_ids] (+ position[pos]))``.

    The position table exists when the config's position scheme has one (``absolute``); ALiBi,
    RoPE and ``none`` act in attention instead, or not at all.
    """

    def __init__(self, config: MosaicConfig):
        super().__init__()
        self.word_embeddings = _embedding(config.vocab_size, config.hidden_size,
                                          padding_idx=config.pad_token_id)
        self.position_embeddings = _embedding(config.max_position_embeddings, config.hidden_size) \
            if config.position_scheme.learned_table else None
        self.token_type_embeddings = _embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = make_norm(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor,
                positions: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids, token_type_ids, positions: (...,) int64 -> (..., H).

        ``positions`` (within each sequence) is read only when there is a position table.
        """
        hidden = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
        if self.position_embeddings is not None:
            hidden = hidden + self.position_embeddings(positions)
        return self.dropout(self.LayerNorm(hidden))


class SelfAttention(nn.Module):
    """Fused QKV projection and variable-length attention.

    ``Wqkv`` maps H -> 3H; its output splits as [Q | K | V], and within each, head h owns
    features [h*d, (h+1)*d). The batch's :class:`AttentionPositions` rotate Q and K (RoPE) and
    give the ALiBi slopes. The two steps are separate methods: :meth:`project` is token-wise,
    :meth:`attend` mixes the tokens of each sequence (regional compilation compiles the first
    and runs the second eagerly, :mod:`.regions`).
    """

    def __init__(self, config: MosaicConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        self.attention_impl = config.attention_impl
        self.attention_window = config.attention_window
        self.dropout_p = config.attention_probs_dropout_prob
        self.Wqkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)

    def project(self, hidden: torch.Tensor, positions: AttentionPositions
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """hidden: (T, H) -> q, k, v: (T, heads, head_dim), q and k rotated."""
        qkv = self.Wqkv(hidden).view(hidden.shape[0], 3, self.num_heads, self.head_dim)
        q, k, v = qkv.unbind(1)  # strided views, no copy
        q, k = positions.rotate(q, k)
        return q, k, v

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               packing: Packing | PaddedRows, positions: AttentionPositions) -> torch.Tensor:
        """q, k, v: (T, heads, head_dim) -> (T, H), each token attending within its sequence."""
        out = varlen_attention(q, k, v, packing.cu_seqlens, packing.max_seqlen, positions.slopes,
                               impl=self.attention_impl,
                               dropout_p=self.dropout_p if self.training else 0.0,
                               window=self.attention_window)
        return out.reshape(q.shape[0], self.num_heads * self.head_dim)  # -1 fails at T = 0


class Attention(nn.Module):
    """Self-attention (``self``), then ``output``: projection, residual and norm
    (:mod:`.residual`). :class:`EncoderLayer` runs the parts."""

    def __init__(self, config: MosaicConfig):
        super().__init__()
        self.self = SelfAttention(config)
        self.output = ResidualOutput(config)


def token_blocks(fn: Callable[..., torch.Tensor], *tensors: torch.Tensor) -> torch.Tensor:
    """``fn`` of token-wise work, applied to blocks of at most :data:`FEED_FORWARD_BLOCK` tokens.

    tensors: (T, ...) each, cut alike -> ``fn``'s (T, ...) outputs concatenated. ``fn`` must act
    on each token alone, so the blocks give the result of one call while bounding its
    intermediates (the GLU's (T, 2I) is 100 MB at 4096 float32 tokens). The blocks are of equal
    size within one token, so none has fewer than 512 tokens: a compiled ``fn`` sees no size
    it would specialise on. Traced (``torch.compile``, ``torch.export``), one call: a split by a
    symbolic token count would recompile per length.
    """
    tokens = tensors[0].shape[0]
    if torch.compiler.is_compiling() or tokens <= FEED_FORWARD_BLOCK:  # no guard on T when traced
        return fn(*tensors)
    count = -(-tokens // FEED_FORWARD_BLOCK)
    return torch.cat([fn(*block) for block in zip(*(t.tensor_split(count) for t in tensors))])


class EncoderLayer(nn.Module):
    """Attention block, then the config's feed-forward block, ``mlp`` (:mod:`.feed_forward`).

    A block whose parts sit beside ``attention`` in its published layout
    (``stored_beside_attention``: classic BERT's ``intermediate`` and ``output``) has them
    registered as this layer's own children, so that state-dict keys stay module paths
    (``encoder.layer.N.output.dense.weight``); ``mlp`` then calls them without being registered
    a second time.
    """

    def __init__(self, config: MosaicConfig):
        super().__init__()
        self.attention = Attention(config)
        block = config.feed_forward_class(config)
        if block.stored_beside_attention:
            for name, part in block.named_children():
                self.add_module(name, part)
            self.__dict__["mlp"] = block  # a plain attribute: its parts are registered above
        else:
            self.mlp = block

    def before_attention(self, hidden: torch.Tensor, positions: AttentionPositions
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The token-wise work before attention: hidden (T, H) -> q, k, v (T, heads, head_dim)."""
        return self.attention.self.project(self.attention.output.sublayer_input(hidden),
                                           positions)

    def after_attention(self, hidden: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        """The token-wise work after attention: the attention block's output projection,
        residual and norm, then the feed-forward block. hidden, attended: (T, H) -> (T, H)."""
        return self.mlp(self.attention.output.close(hidden, attended))

    def forward(self, hidden: torch.Tensor, packing: Packing | PaddedRows,
                positions: AttentionPositions) -> torch.Tensor:
        """hidden: (T, H) -> (T, H)."""
        q, k, v = self.before_attention(hidden, positions)
        attended = self.attention.self.attend(q, k, v, packing, positions)
        return token_blocks(self.after_attention, hidden, attended)


class Encoder(nn.Module):
    """The layers, then (pre-LN only) ``final_layernorm``. With ``gradient_checkpointing`` set,
    a layer run with gradients keeps only its input for the backward pass and recomputes the
    rest there (dropout masks replayed)."""

    def __init__(self, config: MosaicConfig):
        super().__init__()
        self.layer = nn.ModuleList(EncoderLayer(config) for _ in range(config.num_hidden_layers))
        self.gradient_checkpointing = False
        self.final_layernorm = make_norm(config) if config.placement.final_norm else None

    def forward(self, hidden: torch.Tensor, packing: Packing | PaddedRows,
                positions: AttentionPositions) -> torch.Tensor:
        """hidden: (T, H) packed embeddings -> (T, H) last hidden states."""
        run = None if torch.compiler.is_compiling() else LAYER_RUNNER.get()
        for layer in self.layer:
            if self.gradient_checkpointing and torch.is_grad_enabled():
                hidden = checkpoint(layer, hidden, packing, positions, use_reentrant=False)
            elif run is not None:
                hidden = run(layer, hidden, packing, positions)
            else:
                hidden = layer(hidden, packing, positions)
        if self.final_layernorm is not None:
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
    """``norm(gelu(dense(h)))`` before the vocabulary projection (the config's norm)."""

    def __init__(self, config: MosaicConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = make_norm(config)

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
