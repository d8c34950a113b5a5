"""One ``embed-corpus`` run: check the options, the model, the input and the output directory, then
let an engine compute the shards that are missing or cannot be proven, and mark the manifest
complete. A run that fails removes the output directory again if it created it and finished no
shard, so that a refused run leaves nothing behind."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from .reading import scan_corpus
from .settings import CorpusSettings
from .shards import OutputDirectory, input_identity, model_identity

ENGINES = ("local", "ray")
RAY_OPTIONS = ("address", "num_workers", "gpus_per_worker", "cpus_per_worker", "embedder")


@dataclass(frozen=True)
class RunSummary:
    """What a run did: shards computed now (``replaced`` of them had a file that could not be
    proven) and found done, rows in all, embedded now, bad rows."""

    computed: int
    already_done: int
    rows: int
    written: int
    bad_rows: int
    seconds: float
    replaced: int = 0


def embed_corpus(input: str | Path, output: str | Path, settings: CorpusSettings,
                 engine: str = "local", **ray_options) -> RunSummary:
    """Embed the corpus at ``input`` into ``output`` (see :mod:`mosaic_encoder.corpus`).

    Every check (engine options, model directory, every input row, the output directory's
    manifest and shards) runs before the model is loaded or anything is written; each failure is
    one :class:`MosaicError`. ``ray_options`` (:data:`RAY_OPTIONS`) go to
    :func:`~mosaic_encoder.corpus.ray_engine.run_ray`.
    """
    if engine not in ENGINES:
        raise InputError(f"engine {engine!r} is not one of {', '.join(ENGINES)}.")
    if engine == "local" and ray_options:
        raise InputError(f"{', '.join(ray_options)} apply to the ray engine only.")
    unknown = [name for name in ray_options if name not in RAY_OPTIONS]
    if unknown:
        raise InputError(f"{unknown[0]!r} is not an engine option (those are "
                         f"{', '.join(RAY_OPTIONS)}).")
    if engine == "ray":
        from .ray_engine import check_options

        check_options(**ray_options)
    model = model_identity(settings)
    corpus = scan_corpus(input, settings.text_column, settings.id_column, settings.rows_per_shard)
    directory = OutputDirectory(output, model, input_identity(settings, corpus))
    missing = directory.check(corpus)
    replaced = sum(directory.shard_path(shard).exists() for shard in missing)
    directory.start(corpus)
    began = time.perf_counter()
    try:
        if engine == "local":
            from .local import run_local

            written = run_local(settings, missing, directory, corpus.id_type)
        else:
            from .ray_engine import run_ray

            written = run_ray(settings, missing, directory, corpus.id_type, **ray_options)
        directory.finish(corpus)
    except BaseException:
        directory.abandon()
        raise
    return RunSummary(len(missing), len(corpus.shards) - len(missing), corpus.rows, written,
                      len(corpus.bad_rows), time.perf_counter() - began, replaced)
