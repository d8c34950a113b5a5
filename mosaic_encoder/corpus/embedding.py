"""One shard's work, the same in every engine: read its rows, embed the good texts, write the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import MosaicError
from ..files import short
from .reading import Shard, read_shard, text_problem
from .settings import CorpusSettings
from .shards import shard_stamp, write_shard


def embed_shard(encoder, shard: Shard, settings: CorpusSettings, output: Path,
                id_type: str | None, model_sha256: str) -> int:
    """Embed the shard's rows whose text is a non-empty string and write ``output``; rows written.

    ``encoder`` is a :class:`SentenceEncoder`; its ``encode`` sorts the shard's texts by length and
    batches them under ``settings.batch_size`` and ``settings.max_tokens_per_batch``, so every
    engine computes exactly what ``encode`` computes on the same texts. The file is stamped with
    the digests of the shard's rows and of the model (``model_sha256``). Embeddings that are not
    finite are refused, as ``encode`` refuses them, and nothing is written.
    """
    ids, texts = read_shard(shard, settings.text_column, settings.id_column)
    keep = [i for i, text in enumerate(texts) if text_problem(text) is None]
    embeddings = encoder.encode([texts[i] for i in keep], batch_size=settings.batch_size,
                                max_tokens_per_batch=settings.max_tokens_per_batch,
                                show_progress_bar=False)
    bad = ~np.isfinite(embeddings).all(axis=1)
    if bad.any():
        raise MosaicError(f"shard {shard.name}: {int(bad.sum())} of {len(keep)} embeddings are "
                          f"not finite (NaN or Inf; the first is id "
                          f"{short(ids[keep[int(bad.argmax())]], quote=True)}): the weights "
                          f"overflow in {settings.dtype} or are corrupt, so nothing was written "
                          f"for it (try --dtype float32, and mosaic-encoder verify on the "
                          f"checkpoint).")
    write_shard(output, [ids[i] for i in keep], embeddings, id_type,
                shard_stamp(shard, model_sha256))
    return len(keep)
