"""One shard's work, the same in every engine: read its rows, embed the good texts, write the file."""

from __future__ import annotations

from pathlib import Path

from .reading import Shard, read_shard, text_problem
from .settings import CorpusSettings
from .shards import write_shard


def embed_shard(encoder, shard: Shard, settings: CorpusSettings, output: Path,
                id_type: str | None) -> int:
    """Embed the shard's rows whose text is a non-empty string and write ``output``; rows written.

    ``encoder`` is a :class:`SentenceEncoder`; its ``encode`` sorts the shard's texts by length and
    batches them under ``settings.batch_size`` and ``settings.max_tokens_per_batch``, so every
    engine computes exactly what ``encode`` computes on the same texts.
    """
    ids, texts = read_shard(shard, settings.text_column, settings.id_column)
    keep = [i for i, text in enumerate(texts) if text_problem(text) is None]
    embeddings = encoder.encode([texts[i] for i in keep], batch_size=settings.batch_size,
                                max_tokens_per_batch=settings.max_tokens_per_batch,
                                show_progress_bar=False)
    write_shard(output, [ids[i] for i in keep], embeddings, id_type)
    return len(keep)
