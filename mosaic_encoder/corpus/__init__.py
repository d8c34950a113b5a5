"""Embed a corpus of (id, text) rows into resumable Parquet shards, in one process or on Ray.

``reading`` scans the input and fixes the shards, ``shards`` owns the output directory and its
manifest, ``embedding`` is one shard's work, ``local`` and ``ray_engine`` run it, ``driver`` ties a
run together and ``command`` is the ``embed-corpus`` subcommand. Nothing here imports Ray until the
Ray engine runs, nor torch until a corpus is embedded (the names below are imported when first
used, so that the command line's parser builds without them).
"""

_LAZY = {"RunSummary": "driver", "embed_corpus": "driver", "CorpusSettings": "settings"}


def __getattr__(name: str):
    import importlib

    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["CorpusSettings", "RunSummary", "embed_corpus"]
