"""Retrieval quality on held-out pairs: each anchor searches all held-out positives."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..tokenizer import TextTokenizer, collate
from .model import SentenceModel


@dataclass(frozen=True)
class Retrieval:
    """recall@1: share of anchors whose best-scoring positive is their own; mrr: mean reciprocal
    rank of the own positive among all positives (ties count against it)."""

    recall_at_1: float
    mrr: float
    size: int


def retrieval_metrics(anchors: torch.Tensor, positives: torch.Tensor) -> Retrieval:
    """anchors, positives: (N, D) float embeddings; anchor i belongs with positive i."""
    scores = F.normalize(anchors.float(), dim=-1) @ F.normalize(positives.float(), dim=-1).T
    own = scores.diagonal().unsqueeze(1)
    ranks = (scores >= own).sum(dim=1).double()  # 1 when the own positive beats every other one
    return Retrieval(float((ranks == 1).double().mean()), float((1.0 / ranks).mean()),
                     anchors.shape[0])


@torch.no_grad()
def embed_texts(model: SentenceModel, tokenizer: TextTokenizer, texts: list[str],
                device: torch.device, batch_size: int = 64) -> torch.Tensor:
    """(N, D) float32 embeddings of ``texts`` in eval mode (no dropout), then back to training."""
    was_training = model.training
    model.eval()
    ids, types, _ = tokenizer.encode_ids(texts)
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    parts = []
    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        tokens = collate([ids[i] for i in batch], [types[i] for i in batch], tokenizer.pad_token_id)
        parts.append(model(tokens.input_ids.to(device), tokens.attention_mask.to(device),
                           tokens.token_type_ids.to(device)).cpu())
    model.train(was_training)
    embedded = torch.cat(parts)
    out = torch.empty_like(embedded)
    out[torch.tensor(order)] = embedded
    return out


def evaluate(model: SentenceModel, tokenizer: TextTokenizer, anchors: list[str],
             positives: list[str], device: torch.device,
             dims: tuple[int, ...] = ()) -> dict[int | None, Retrieval]:
    """Recall@1 and MRR of the held-out pairs ``(anchors[i], positives[i])``: under None for the
    whole embeddings, and under each of ``dims`` for the embeddings cut to that many dimensions
    (Matryoshka)."""
    embedded_anchors = embed_texts(model, tokenizer, anchors, device)
    embedded_positives = embed_texts(model, tokenizer, positives, device)
    return {dim: retrieval_metrics(embedded_anchors[:, :dim], embedded_positives[:, :dim])
            for dim in (None, *dims)}
