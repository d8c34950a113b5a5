"""``transformers``' ``BertForMaskedLM`` holding a classic model's weights: the yardstick of the
loss tests and of the training-speed benchmark.

Only the classic variant (absolute positions, GELU feed-forward, post-LN) has a ``transformers``
counterpart. Its fused ``Wqkv`` is split back into ``query``, ``key`` and ``value``
(:func:`~mosaic_encoder.checkpoint.split_qkv`); ``transformers`` is imported when called, never by ``import mosaic_encoder``.
"""

from __future__ import annotations

from torch import nn

from ..checkpoint import split_qkv
from ..config import CLASSIC_BERT
from ..models import MosaicBertForMaskedLM


def bert_for_masked_lm(model: MosaicBertForMaskedLM, attention: str = "sdpa") -> nn.Module:
    """A ``transformers.BertForMaskedLM`` with ``model``'s weights (copied), in ``model``'s mode
    and on its device.

    Args:
        model: a classic-variant masked-LM model.
        attention: ``transformers``' ``attn_implementation`` (``sdpa`` or ``eager``).
    """
    import transformers

    config = model.config
    if config.variant() != CLASSIC_BERT:
        raise ValueError(f"only the classic design ({CLASSIC_BERT}) exists in transformers, not "
                         f"{config.describe_variant()}.")
    reference = transformers.BertForMaskedLM(transformers.BertConfig(
        vocab_size=config.vocab_size, hidden_size=config.hidden_size,
        num_hidden_layers=config.num_hidden_layers, num_attention_heads=config.num_attention_heads,
        intermediate_size=config.intermediate_size, hidden_act="gelu",
        max_position_embeddings=config.max_position_embeddings,
        type_vocab_size=config.type_vocab_size, layer_norm_eps=config.layer_norm_eps,
        pad_token_id=config.pad_token_id, hidden_dropout_prob=config.hidden_dropout_prob,
        attention_probs_dropout_prob=config.attention_probs_dropout_prob,
        attn_implementation=attention))
    state = split_qkv(model.state_dict())
    state["cls.predictions.bias"] = state["cls.predictions.decoder.bias"]
    missing, unexpected = reference.load_state_dict(state, strict=False)
    if unexpected or any("position_ids" not in name for name in missing):
        raise ValueError(f"transformers' BertForMaskedLM does not match: missing {missing}, "
                         f"unexpected {unexpected}.")
    device = next(model.parameters()).device
    return reference.to(device).train(model.training)
