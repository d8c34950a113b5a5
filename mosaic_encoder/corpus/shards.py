"""The output directory: Parquet shards of (id, embedding) and the ``manifest.json`` that describes them.

A shard file ``part-FFFFF-SSSSSS.parquet`` exists only once it is complete: it is written to a
temporary name and renamed (:func:`mosaic_encoder.atomic.atomic_path`), so a run killed at any
moment leaves finished shards and at most some hidden ``.part-*.tmp`` files, which the next run
removes. A rerun with the same model and input computes the missing shards only; a directory that
holds another model's shards, or another input's, is refused before any work.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_path, atomic_write
from ..checkpoint import CheckpointDir
from ..errors import InputError
from .reading import Corpus, Shard
from .settings import CorpusSettings, weights_digest

MANIFEST_NAME = "manifest.json"
FORMAT = "mosaic-encoder embed-corpus 1"
SUFFIX = ".parquet"


def model_identity(settings: CorpusSettings) -> dict[str, Any]:
    """What decides the embeddings: weights digest, dtype, pooling, normalisation, length, width.

    Read from the checkpoint's files without loading the model.
    """
    checkpoint = CheckpointDir.open(settings.model)
    pipeline, config = checkpoint.pipeline, checkpoint.config()
    return {"path": str(checkpoint.path), "weights_sha256": weights_digest(pipeline.transformer_dir),
            "dtype": settings.dtype, "pooling": list(pipeline.pooling.modes), "normalize": True,
            "max_seq_length": settings.max_seq_length or pipeline.max_seq_length,
            "embedding_dim": config.hidden_size * len(pipeline.pooling.modes)}


def input_identity(settings: CorpusSettings, corpus: Corpus) -> dict[str, Any]:
    """What decides the shard assignment: the input files, their row counts, columns, shard size."""
    return {"path": str(corpus.root), "text_column": settings.text_column,
            "id_column": settings.id_column, "rows_per_shard": settings.rows_per_shard,
            "files": corpus.files}


class OutputDirectory:
    """``OUTPUT_DIR`` of one run: which shards are finished, and the manifest.

    Args:
        path: the directory (created if missing).
        model: :func:`model_identity` of this run.
        input: :func:`input_identity` of this run.
    """

    def __init__(self, path: str | Path, model: dict[str, Any], input: dict[str, Any]):
        self.path = Path(path)
        self.model = model
        self.input = input

    def shard_path(self, shard: Shard) -> Path:
        return self.path / f"{shard.name}{SUFFIX}"

    def check(self, corpus: Corpus) -> list[Shard]:
        """The shards still to compute; raises :class:`InputError` if the directory is not ours.

        Reads only: nothing is written or removed.
        """
        if self.path.exists() and not self.path.is_dir():
            raise InputError(f"output directory {self.path} is a file.")
        manifest_path = self.path / MANIFEST_NAME
        if not manifest_path.is_file():
            strangers = sorted(p.name for p in self.path.iterdir() if not p.name.startswith(".")) \
                if self.path.is_dir() else []
            if strangers:
                raise InputError(f"output directory {self.path} is not empty and has no "
                                 f"{MANIFEST_NAME} (it holds {strangers[0]}); choose an empty or "
                                 f"new directory.")
            return list(corpus.shards)
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
            previous_model, previous_input = manifest["model"], manifest["input"]
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as err:
            raise InputError(f"manifest {manifest_path} is not an embed-corpus manifest ({err}).") \
                from None
        differences = [key for key in self.model if key != "path"
                       and previous_model.get(key) != self.model[key]]
        if differences:
            key = differences[0]
            raise InputError(f"output directory {self.path} holds shards of a different model "
                             f"({key} {previous_model.get(key)!r} there, {self.model[key]!r} now); "
                             f"choose another directory.")
        differences = [key for key in self.input if key != "path"
                       and previous_input.get(key) != self.input[key]]
        if differences:
            raise InputError(f"output directory {self.path} holds shards of a different input "
                             f"({differences[0]} differs from {manifest_path}); choose another "
                             f"directory.")
        missing = []
        for shard in corpus.shards:
            path = self.shard_path(shard)
            if not path.is_file():
                missing.append(shard)
            elif (rows := _parquet_rows(path)) != shard.embedded:
                raise InputError(f"shard {path} holds {rows} rows where this input gives "
                                 f"{shard.embedded}; it was not written by this command, remove "
                                 f"it.")
        return missing

    def start(self, corpus: Corpus) -> None:
        """Create the directory, remove temporaries of killed runs, write an incomplete manifest."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise InputError(f"output directory {self.path} cannot be created "
                             f"({err.strerror}).") from None
        for stale in self.path.glob(f".part-*{SUFFIX}.*.tmp"):
            stale.unlink(missing_ok=True)
        self._write_manifest(corpus, complete=False)

    def finish(self, corpus: Corpus) -> None:
        """Check that every shard exists, then mark the manifest complete."""
        missing = [s.name for s in corpus.shards if not self.shard_path(s).is_file()]
        if missing:
            raise InputError(f"output directory {self.path} lacks {len(missing)} shard(s) after "
                             f"the run (first: {missing[0]}); run the command again to complete "
                             f"them.")
        for stale in self.path.glob(f".part-*{SUFFIX}.*.tmp"):
            stale.unlink(missing_ok=True)
        self._write_manifest(corpus, complete=True)

    def _write_manifest(self, corpus: Corpus, complete: bool) -> None:
        bad = [{"id": r.id, "file": r.file, "row": r.row, "reason": r.reason}
               for r in corpus.bad_rows]
        manifest = {"format": FORMAT, "complete": complete, "model": self.model,
                    "input": self.input, "rows": corpus.rows, "embedded": corpus.rows - len(bad),
                    "bad_rows": {"count": len(bad), "rows": bad},
                    "shards": [{"file": self.shard_path(s).name, "rows": s.embedded}
                               for s in corpus.shards]}
        data = (json.dumps(manifest, indent=1) + "\n").encode()
        atomic_write(self.path / MANIFEST_NAME, lambda stream: stream.write(data))


def write_shard(path: Path, ids: list, embeddings: np.ndarray, id_type: str | None) -> None:
    """Write ``ids`` and float32 ``embeddings`` (N, D) as Parquet columns ``id`` and ``embedding``.

    ``embedding`` is a fixed-size list of D float32; ``id`` is int64 or string (``id_type``).
    The file appears at ``path`` only once complete.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
    width = embeddings.shape[1]
    column = pa.FixedSizeListArray.from_arrays(pa.array(embeddings.reshape(-1), pa.float32()),
                                               width)
    id_arrow = pa.int64() if id_type == "int" else pa.string()
    table = pa.table({"id": pa.array(ids, id_arrow), "embedding": column})
    with atomic_path(path) as temporary:
        pq.write_table(table, temporary)


def read_embeddings(directory: str | Path) -> tuple[list, np.ndarray]:
    """All (ids, float32 (N, D) embeddings) of a finished output directory, in shard order."""
    import pyarrow.parquet as pq

    directory = Path(directory)
    manifest = json.loads((directory / MANIFEST_NAME).read_text(encoding="utf-8"))
    ids: list = []
    parts = []
    for shard in manifest["shards"]:
        table = pq.read_table(directory / shard["file"])
        ids += table.column("id").to_pylist()
        flat = table.column("embedding").combine_chunks().flatten().to_numpy()
        parts.append(flat.reshape(len(table), manifest["model"]["embedding_dim"]))
    width = manifest["model"]["embedding_dim"]
    return ids, np.concatenate(parts) if parts else np.zeros((0, width), np.float32)


def _parquet_rows(path: Path) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_metadata(path).num_rows
    except (OSError, pa.ArrowException) as err:
        raise InputError(f"shard {path} is not a readable Parquet file ({err}); remove it.") \
            from None
