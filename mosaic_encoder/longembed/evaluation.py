"""Scoring an embedding model on generated tasks: embed, rank every document for every query,
and report by length and, with depths, by where the needle lies.

Documents of every task and length are embedded in one call of the encoder's ``encode``, so its
length-sorted, token-budget batching covers all of them (and one progress bar shows it); queries
in a second call. Each query ranks the documents of its own task and length by cosine
similarity (:mod:`.metrics`).

A length beyond the model's ``max_seq_length`` is evaluated truncated, which is what the model
does with such a document: the row says how many documents were cut and how many of the queries'
needles lie wholly or partly past the cut.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .documents import Task, TokenCounter
from .metrics import QueryScores, Retrieval, query_scores, retrieval

# Where the needle lies, as a share of the text around it: the first, middle and last tenth.
DEPTH_BUCKETS = (("first", 0.0, 0.1), ("middle", 0.45, 0.55), ("last", 0.9, 1.0))


class Encoder(Protocol):
    """What is scored: :class:`~mosaic_encoder.sentence.SentenceEncoder` or anything with its
    ``encode`` and ``max_seq_length`` (None: no truncation)."""

    max_seq_length: int | None

    def encode(self, sentences: list[str], batch_size: int = 32,
               max_tokens_per_batch: int | None = None, prompt: str | None = None,
               show_progress_bar: bool | None = None) -> np.ndarray:
        """float32 (N, D) embeddings of ``sentences``, in their order."""


@dataclass(frozen=True)
class EmbeddingSettings:
    """How texts are embedded: texts and padded tokens per batch, the prompts put before queries
    and documents (None: none), whether to show a progress bar (None: on a terminal)."""

    batch_size: int = 32
    max_tokens: int | None = None
    query_prompt: str | None = None
    document_prompt: str | None = None
    progress: bool | None = None


@dataclass(frozen=True)
class Row:
    """The scores of one task at one length.

    Attributes:
        documents: candidate documents; mean_tokens: their mean length (special tokens included).
        truncated: documents longer than ``max_seq_length`` with their prompt.
        needles_cut: queries whose needle lies wholly or partly past the cut.
        scores: over all queries; depths: over the queries of each :data:`DEPTH_BUCKETS` bucket
            (empty unless asked for).
    """

    task: str
    length: int
    documents: int
    mean_tokens: float
    max_seq_length: int | None
    truncated: int
    needles_cut: int
    scores: Retrieval
    depths: dict[str, Retrieval]

    def as_dict(self) -> dict:
        row = {"task": self.task, "length": self.length, "documents": self.documents,
               "mean_tokens": round(self.mean_tokens, 1), "max_seq_length": self.max_seq_length,
               "truncated": self.truncated, "needles_cut": self.needles_cut,
               **self.scores.as_dict()}
        if self.depths:
            row["depths"] = {name: {"range": [low, high], **self.depths[name].as_dict()}
                             for name, low, high in DEPTH_BUCKETS}
        return row


def evaluate(encoder: Encoder, tasks: list[Task], counter: TokenCounter,
             settings: EmbeddingSettings = EmbeddingSettings(), depths: bool = False
             ) -> list[Row]:
    """One row per task, in order.

    Args:
        encoder: the model, with its tokenizer's token counts in ``counter`` (for the prompts).
        depths: score the depth buckets too.
    """
    documents = encoder.encode([d.text for task in tasks for d in task.documents],
                               batch_size=settings.batch_size,
                               max_tokens_per_batch=settings.max_tokens,
                               prompt=settings.document_prompt,
                               show_progress_bar=settings.progress)
    queries = encoder.encode([q for task in tasks for q in task.queries],
                             batch_size=settings.batch_size,
                             max_tokens_per_batch=settings.max_tokens,
                             prompt=settings.query_prompt, show_progress_bar=False)
    prompt_tokens = counter([settings.document_prompt])[0] if settings.document_prompt else 0
    rows, d, q = [], 0, 0
    for task in tasks:
        n_docs, n_queries = len(task.documents), len(task.queries)
        similarity = _normalized(queries[q:q + n_queries]) @ _normalized(
            documents[d:d + n_docs]).T
        d, q = d + n_docs, q + n_queries
        per_query = query_scores(similarity, np.arange(n_queries))
        rows.append(_row(task, per_query, encoder.max_seq_length, prompt_tokens,
                         counter.special_tokens, depths))
    return rows


def _normalized(embeddings: np.ndarray) -> np.ndarray:
    embeddings = np.asarray(embeddings, dtype=np.float64)
    return embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)


def _row(task: Task, per_query: QueryScores, max_seq_length: int | None, prompt_tokens: int,
         special_tokens: int, depths: bool) -> Row:
    answering = task.documents[:len(task.queries)]
    if max_seq_length is None:
        truncated = needles_cut = 0
    else:
        truncated = sum(doc.tokens + prompt_tokens > max_seq_length for doc in task.documents)
        seen = max_seq_length - special_tokens - prompt_tokens  # text tokens the model reads
        needles_cut = sum(doc.needle_offset + doc.needle_tokens > seen for doc in answering)
    by_depth = {}
    if depths:
        where = np.array([doc.depth for doc in answering])
        by_depth = {name: retrieval(per_query, (where >= low) & (
            (where <= high) if high == 1.0 else (where < high)))
            for name, low, high in DEPTH_BUCKETS}
    return Row(task.name, task.length, len(task.documents),
               float(np.mean([doc.tokens for doc in task.documents])), max_seq_length,
               int(truncated), int(needles_cut), retrieval(per_query), by_depth)
