"""The local engine: one process, one model, the shards one after another (no Ray needed)."""

from __future__ import annotations

from tqdm import tqdm

from .embedding import embed_shard
from .reading import Shard
from .settings import CorpusSettings
from .shards import OutputDirectory


def run_local(settings: CorpusSettings, shards: list[Shard], output: OutputDirectory,
              id_type: str | None) -> int:
    """Embed ``shards`` in this process; returns the number of rows written."""
    if not shards:
        return 0
    encoder = settings.encoder()
    written = 0
    for shard in tqdm(shards, desc="embed-corpus", unit="shard", disable=None):
        written += embed_shard(encoder, shard, settings, output.shard_path(shard), id_type,
                               output.model_sha256)
    return written
