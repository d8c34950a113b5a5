"""Embed a corpus of (id, text) rows into resumable Parquet shards, in one process or on Ray.

``reading`` scans the input and fixes the shards, ``shards`` owns the output directory and its
manifest, ``embedding`` is one shard's work, ``local`` and ``ray_engine`` run it, ``driver`` ties a
run together and ``command`` is the ``embed-corpus`` subcommand. Nothing here imports Ray until the
Ray engine runs.
"""

from .driver import RunSummary, embed_corpus
from .settings import CorpusSettings

__all__ = ["CorpusSettings", "RunSummary", "embed_corpus"]
