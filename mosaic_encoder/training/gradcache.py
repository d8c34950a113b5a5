"""One optimisation step's gradients, plain or through a gradient cache.

The gradient cache (Gao et al., "Scaling Deep Contrastive Learning Batch Size under Memory Limited
Setup", 2021) decouples the contrastive batch from what fits in memory:

1. embed the batch in chunks without building the graph, recording the RNG state before each chunk;
2. compute the loss on the detached embeddings and its gradient with respect to them;
3. re-run each chunk with the graph, under the RNG state recorded for it (so dropout draws the same
   masks as in step 1), and back-propagate the cached embedding gradient through it.

The parameter gradients equal those of differentiating the loss through the chunk-by-chunk forward
pass; only one chunk's activations are alive at a time.
"""

from __future__ import annotations

import contextlib
from typing import Callable, ContextManager

import torch
from torch import nn

from ..tokenizer import TokenizedBatch
from .model import rows
from .rng import rng_state, set_rng_state

LossOf = Callable[[torch.Tensor], torch.Tensor]


def backward(model: nn.Module, tokens: TokenizedBatch, loss_of: LossOf,
             chunk_size: int | None = None,
             no_sync: Callable[[], ContextManager] = contextlib.nullcontext) -> torch.Tensor:
    """Accumulate into ``.grad`` the gradient of ``loss_of(model(tokens))``; return the loss.

    Args:
        model: maps a padded batch to (R, D) embeddings (a :class:`SentenceModel`, possibly inside
            DistributedDataParallel).
        tokens: (R, S) padded batch on the model's device.
        loss_of: (R, D) embeddings -> scalar loss (it may gather across processes).
        chunk_size: rows per chunk for the gradient cache; None embeds all rows with the graph.
        no_sync: context that suspends DDP's gradient all-reduce; every chunk but the last runs in
            it, so gradients are reduced once per step.
    Returns:
        the detached float32 loss.
    """
    total = tokens.input_ids.shape[0]
    if chunk_size is None or chunk_size >= total:
        loss = loss_of(model(tokens.input_ids, tokens.attention_mask, tokens.token_type_ids))
        loss.backward()
        return loss.detach()
    device = tokens.input_ids.device
    bounds = [(start, min(start + chunk_size, total)) for start in range(0, total, chunk_size)]
    states, embeddings = [], []
    with torch.no_grad():
        for start, stop in bounds:
            states.append(rng_state(device))
            chunk = rows(tokens, start, stop)
            embeddings.append(model(chunk.input_ids, chunk.attention_mask, chunk.token_type_ids))
    after = rng_state(device)
    cached = torch.cat(embeddings).requires_grad_()
    loss = loss_of(cached)
    loss.backward()
    gradients = cached.grad
    for number, ((start, stop), state) in enumerate(zip(bounds, states)):
        last = number == len(bounds) - 1
        with contextlib.nullcontext() if last else no_sync():
            set_rng_state(state, device)
            chunk = rows(tokens, start, stop)
            embedded = model(chunk.input_ids, chunk.attention_mask, chunk.token_type_ids)
            embedded.backward(gradients[start:stop])
    set_rng_state(after, device)
    return loss.detach()
