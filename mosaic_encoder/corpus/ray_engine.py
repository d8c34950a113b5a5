"""The Ray engine: Ray Data maps the shards over a pool of actors, each holding one model.

The dataset is the list of missing shards (one block each); ``map_batches`` hands them to a pool
of ``num_workers`` :class:`ShardEmbedder` actors, which load the model once, read their shard's
rows from the input files and write its Parquet file through a temporary name. Ray schedules the
actors (one per GPU with ``gpus_per_worker=1``), restarts an actor whose process dies and retries
its shard, and shows progress. Shard files are written by the actors rather than by
``Dataset.write_parquet`` because the shard assignment must depend on the input alone (so that a
rerun completes exactly the missing shards) and a file must appear only once complete.

Ray is imported only when :func:`run_ray` runs: ``pip install -e ".[ray]"``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import MosaicError
from .embedding import embed_shard
from .reading import Shard
from .settings import CorpusSettings
from .shards import OutputDirectory


class ShardEmbedder:
    """A Ray Data actor: loads the model once, then embeds and writes the shards it is given.

    Args:
        settings: :meth:`CorpusSettings.as_dict` of the run.
        output: the output directory (shared storage on a cluster).
        id_type: ``"int"`` or ``"str"``, the Parquet type of the ``id`` column.
    """

    def __init__(self, settings: dict[str, Any], output: str, id_type: str | None):
        self.settings = CorpusSettings(**settings)
        self.output = Path(output)
        self.id_type = id_type
        self.encoder = self.settings.encoder()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """batch: columns of shard descriptors -> {"name", "rows" written, "error" ("" if none)}.

        A :class:`MosaicError` (e.g. an input file changed since the scan) is returned as the
        shard's ``error`` rather than raised: Ray would wrap it into a traceback, and the other
        shards can still be completed.
        """
        names, rows, errors = [], [], []
        for index in range(len(batch["name"])):
            shard = Shard(**{key: _plain(values[index]) for key, values in batch.items()})
            try:
                written = embed_shard(self.encoder, shard, self.settings,
                                      self.output / f"{shard.name}.parquet", self.id_type)
            except MosaicError as err:
                written, error = 0, str(err)
            else:
                error = ""
            names.append(shard.name)
            rows.append(written)
            errors.append(error)
        return {"name": np.array(names, dtype=object), "rows": np.array(rows, dtype=np.int64),
                "error": np.array(errors, dtype=object)}


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


def run_ray(settings: CorpusSettings, shards: list[Shard], output: OutputDirectory,
            id_type: str | None, address: str | None = None, num_workers: int = 1,
            gpus_per_worker: float = 0, cpus_per_worker: float = 1,
            embedder: type = ShardEmbedder) -> int:
    """Embed ``shards`` on a Ray cluster; returns the number of rows written.

    Connects to ``address`` (``"auto"``, ``"ray://host:10001"``, ...) or starts a local Ray when
    none is given and this process has not called ``ray.init`` already. ``embedder`` is the actor
    class (a subclass of :class:`ShardEmbedder`).
    """
    try:
        import ray
    except ImportError:
        raise MosaicError('--engine ray needs Ray: pip install -e ".[ray]" (or use --engine '
                          'local).') from None
    if not shards:
        return 0
    if not ray.is_initialized():
        ray.init(address=address, logging_level="WARNING")
    # Actors run in other processes, maybe on other nodes: they get absolute paths.
    settings = replace(settings, model=str(Path(settings.model).resolve()))
    dataset = ray.data.from_items([shard.as_dict() for shard in shards],
                                  override_num_blocks=len(shards))
    results = dataset.map_batches(
        embedder, batch_size=1,
        fn_constructor_kwargs={"settings": settings.as_dict(), "output": str(output.path.resolve()),
                               "id_type": id_type},
        compute=ray.data.ActorPoolStrategy(size=num_workers),
        num_cpus=cpus_per_worker, num_gpus=gpus_per_worker)
    # Ray Data restarts a dead actor process and retries its shard (max_restarts and
    # max_task_retries default to -1 for actor pools); a shard is only ever written whole, so a
    # retry cannot duplicate rows.
    results = list(results.iter_rows())
    errors = [row["error"] for row in results if row["error"]]
    if errors:
        raise MosaicError(f"{errors[0].rstrip('.')} ({len(errors)} shard(s) failed; the others "
                          f"are written, rerun to complete them).")
    return int(sum(row["rows"] for row in results))
