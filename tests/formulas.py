"""Independent plain-tensor formulas of every registry entry, for the tests that check the
modules against them. Written from the definitions (papers, SPEC.md), not from the modules.

Each table is keyed by registry name; tests assert that every registry entry has a formula, so a
new entry cannot go untested.
"""

from __future__ import annotations

import math

import torch


def gelu_erf(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


def layer_norm(x, weight, bias, eps):
    centred = x - x.mean(-1, keepdim=True)
    return centred / torch.sqrt(centred.pow(2).mean(-1, keepdim=True) + eps) * weight + bias


def rms_norm(x, weight, bias, eps):
    assert bias is None
    return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


NORMS = {"layernorm": layer_norm, "rmsnorm": rms_norm}


def norm(norm_type: str, module, x: torch.Tensor) -> torch.Tensor:
    """``module``'s normalisation of x by its registry entry's formula."""
    return NORMS[norm_type](x, module.weight, getattr(module, "bias", None), module.eps)


def post(normalise, sublayer, x):
    return normalise(x + sublayer(x))


def pre(normalise, sublayer, x):
    return x + sublayer(normalise(x))


PLACEMENTS = {"post": post, "pre": pre}


def glu(x, gated_weight, wo_weight, wo_bias, activation):
    gate, value = (x @ gated_weight.T).chunk(2, dim=-1)  # the first half is the gate
    return (activation(gate) * value) @ wo_weight.T + wo_bias


def feed_forward(name: str, mlp, x: torch.Tensor) -> torch.Tensor:
    """The block's sublayer (no residual, no norm) by its registry entry's formula."""
    if name == "glu":
        return glu(x, mlp.gated_layers.weight, mlp.wo.weight, mlp.wo.bias, gelu_erf)
    if name == "swiglu":
        return glu(x, mlp.gated_layers.weight, mlp.wo.weight, mlp.wo.bias,
                   lambda g: g * torch.sigmoid(g))
    if name == "gelu":
        hidden = gelu_erf(x @ mlp.intermediate.dense.weight.T + mlp.intermediate.dense.bias)
        return hidden @ mlp.output.dense.weight.T + mlp.output.dense.bias
    raise KeyError(name)


FEED_FORWARDS = ("glu", "swiglu", "gelu")


def feed_forward_norm(name: str, mlp):
    """The norm module of a feed-forward block."""
    return mlp.output.LayerNorm if name == "gelu" else mlp.layernorm


def rope_rotate_half(x: torch.Tensor, positions: torch.Tensor, theta: float) -> torch.Tensor:
    """Rotate-half RoPE written pair by pair: feature m and feature m + d/2 rotate together by
    ``p * theta^(-2m/d)``. x: (T, heads, d) float64."""
    d = x.shape[-1]
    out = torch.empty_like(x)
    for m in range(d // 2):
        angle = positions.double() * theta ** (-2 * m / d)
        cos, sin = torch.cos(angle)[:, None], torch.sin(angle)[:, None]
        out[..., m] = x[..., m] * cos - x[..., m + d // 2] * sin
        out[..., m + d // 2] = x[..., m + d // 2] * cos + x[..., m] * sin
    return out


def alibi_published_slopes(heads: int) -> torch.Tensor:
    """SPEC.md's slopes: powers of two, interleaved for non-powers of two."""
    def powers(n):
        return [2 ** (-8 * (h + 1) / n) for h in range(n)]
    closest = 2 ** int(math.log2(heads))
    return torch.tensor(powers(closest) + powers(2 * closest)[0::2][:heads - closest],
                        dtype=torch.float64)


POSITIONS = ("alibi", "absolute", "rope", "none")


def encoder(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The last hidden states (B, S, H) of ``model`` (a MosaicBertModel), computed from its
    parameters with the formulas above, in float64, one padded sequence at a time; zeros at
    padded positions."""
    config = model.config
    params = {name: tensor.detach().double() for name, tensor in model.named_parameters()}
    heads, d = config.num_attention_heads, config.head_dim
    out = torch.zeros(*input_ids.shape, config.hidden_size, dtype=torch.float64)
    for row in range(input_ids.shape[0]):
        ids = input_ids[row][attention_mask[row].bool()]
        length = ids.numel()
        if not length:
            continue
        positions = torch.arange(length)
        emb = model.embeddings
        x = params["embeddings.word_embeddings.weight"][ids] + \
            params["embeddings.token_type_embeddings.weight"][0]
        if config.position_embedding_type == "absolute":
            x = x + params["embeddings.position_embeddings.weight"][positions]
        x = _norm(config, emb.LayerNorm, x)
        for layer in model.encoder.layer:
            attention = layer.attention

            def attend(h, attention=attention):
                qkv = h @ _d(attention.self.Wqkv.weight).T + _d(attention.self.Wqkv.bias)
                q, k, v = (t.reshape(length, heads, d) for t in qkv.chunk(3, dim=-1))
                if config.position_embedding_type == "rope":
                    q = rope_rotate_half(q, positions, config.rope_theta)
                    k = rope_rotate_half(k, positions, config.rope_theta)
                scores = torch.einsum("ihd,jhd->hij", q, k) / math.sqrt(d)
                if config.position_embedding_type == "alibi":
                    slopes = model.positions.slopes(torch.device("cpu")).detach().double()
                    distance = (positions[:, None] - positions[None, :]).abs().double()
                    scores = scores - slopes[:, None, None] * distance
                mixed = torch.einsum("hij,jhd->ihd", scores.softmax(-1), v).reshape(length, -1)
                return mixed @ _d(attention.output.dense.weight).T + _d(attention.output.dense.bias)

            place = PLACEMENTS[config.layer_norm_position]
            x = place(lambda h, attention=attention: _norm(config, attention.output.LayerNorm, h),
                      attend, x)
            mlp = layer.mlp
            x = place(lambda h, mlp=mlp: _norm(config, feed_forward_norm(config.feed_forward, mlp),
                                               h),
                      lambda h, mlp=mlp: feed_forward(config.feed_forward, _Double(mlp), h), x)
        if config.layer_norm_position == "pre":
            x = _norm(config, model.encoder.final_layernorm, x)
        out[row, attention_mask[row].bool()] = x
    return out


def _d(t: torch.Tensor) -> torch.Tensor:
    return t.detach().double()


def _norm(config, module, x):
    return NORMS[config.norm_type](x, _d(module.weight),
                                   None if getattr(module, "bias", None) is None
                                   else _d(module.bias), module.eps)


class _Double:
    """Attribute access to a module's parameters, in float64 (for the formulas above)."""

    def __init__(self, module):
        self._module = module

    def __getattr__(self, name):
        value = getattr(self._module, name)
        if isinstance(value, torch.Tensor):
            return value.detach().double()
        return _Double(value)
