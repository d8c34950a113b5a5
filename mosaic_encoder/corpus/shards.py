"""The output directory: Parquet shards of (id, embedding) and the ``manifest.json`` that describes them.

A shard file ``part-FFFFF-SSSSSS.parquet`` exists only once it is complete: it is written to a
temporary name and renamed (:func:`mosaic_encoder.atomic.atomic_path`), so a run killed at any
moment leaves finished shards and at most some hidden ``.part-*.tmp`` files, which the next run
removes. A directory that holds another model's shards, or another input's (other files, row
counts, columns or shard size), is refused before any work.

A rerun keeps only the shards it can prove: each shard file is stamped (Parquet key-value metadata
``mosaic-encoder``) with the digest of the input rows it embeds and of the model identity, and is
written with page checksums. A shard is kept when its stamp names this run's rows and model, its
pages pass their checksums, its schema, row count and width are right, its values are finite,
and its bytes are the ones the manifest recorded (sha256) or, for a file no manifest records yet
(written by a killed or concurrent run), exactly the bytes that writing its content gives. Any
other shard file is recomputed and replaced. The finished manifest records per shard the digests
of its input rows and of its file.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_write
from ..errors import InputError
from ..files import read_json, short
from ..inputs import input_file
from .reading import Corpus, Shard
from .settings import CorpusSettings, files_digest, weights_digest

MANIFEST_NAME = "manifest.json"
FORMAT = "mosaic-encoder embed-corpus 2"
SUFFIX = ".parquet"
STAMP_KEY = b"mosaic-encoder"


def model_identity(settings: CorpusSettings) -> dict[str, Any]:
    """What decides the embeddings: the digests of the weights and the tokenizer, lower-casing,
    dtype, pooling, normalisation, length, width.

    Read from the checkpoint's files without loading the model.
    """
    from ..checkpoint import CheckpointDir

    checkpoint = CheckpointDir.open(settings.model)
    pipeline, config = checkpoint.pipeline, checkpoint.config()
    tokenizer = files_digest([pipeline.transformer_dir / "tokenizer.json"], "tokenizer file")
    return {"path": str(checkpoint.path), "weights_sha256": weights_digest(pipeline.transformer_dir),
            "tokenizer_sha256": tokenizer, "do_lower_case": pipeline.do_lower_case,
            "dtype": settings.dtype, "pooling": list(pipeline.pooling.modes), "normalize": True,
            "max_seq_length": settings.max_seq_length or pipeline.max_seq_length,
            "embedding_dim": config.hidden_size * len(pipeline.pooling.modes)}


def model_digest(model: dict[str, Any]) -> str:
    """sha256 of a :func:`model_identity`, wherever the checkpoint lies (its path is left out)."""
    facts = {key: value for key, value in model.items() if key != "path"}
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()


def input_identity(settings: CorpusSettings, corpus: Corpus) -> dict[str, Any]:
    """What decides the shard assignment: the input files, their row counts, columns, shard size.

    The rows' contents are not part of it: each shard carries the digest of its own rows.
    """
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
        self.model_sha256 = model_digest(model)
        self.created = False
        self._recorded: dict[str, str] = {}  # shard file name -> sha256 in the manifest found

    def shard_path(self, shard: Shard) -> Path:
        return self.path / f"{shard.name}{SUFFIX}"

    def check(self, corpus: Corpus) -> list[Shard]:
        """The shards to compute: those without a file this run can prove (see the module).

        Raises :class:`InputError` if the directory is not ours. Reads only: nothing is written
        or removed.
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
        manifest = _read_manifest(manifest_path)
        previous_model, previous_input = manifest["model"], manifest["input"]
        differences = [key for key in self.model if key != "path"
                       and previous_model.get(key) != self.model[key]]
        if differences:
            key = differences[0]
            raise InputError(f"output directory {self.path} holds shards of a different model "
                             f"({key} {short(previous_model.get(key), quote=True)} there, "
                             f"{short(self.model[key], quote=True)} now); choose another "
                             f"directory.")
        differences = [key for key in self.input if key != "path"
                       and previous_input.get(key) != self.input[key]]
        if differences:
            raise InputError(f"output directory {self.path} holds shards of a different input "
                             f"({differences[0]} differs from {manifest_path}); choose another "
                             f"directory.")
        self._recorded = {entry["file"]: entry["sha256"] for entry in manifest["shards"]
                          if "sha256" in entry}
        missing = [shard for shard in corpus.shards if self.prove(shard, corpus.id_type) is None]
        for shard in missing:  # rewritten now: the old file's digest does not vouch for the new
            self._recorded.pop(self.shard_path(shard).name, None)
        return missing

    def prove(self, shard: Shard, id_type: str | None) -> str | None:
        """The sha256 of the shard's file when it is this run's embedding of the shard's rows
        (see the module), else None."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = self.shard_path(shard)
        try:
            data = input_file(path, "shard").read_bytes()
        except (InputError, OSError):
            return None
        digest = hashlib.sha256(data).hexdigest()
        recorded = self._recorded.get(path.name)
        if recorded not in (None, digest):
            return None
        width = self.model["embedding_dim"]
        stamp = shard_stamp(shard, self.model_sha256)
        try:
            table = pq.read_table(pa.BufferReader(data), page_checksum_verification=True)
            if (table.schema.metadata or {}).get(STAMP_KEY) != stamp or \
                    table.num_rows != shard.embedded or \
                    not table.schema.remove_metadata().equals(_schema(id_type, width)):
                return None
            ids = table.column("id").to_pylist()
            embeddings = table.column("embedding").combine_chunks().flatten().to_numpy()
            embeddings = embeddings.reshape(table.num_rows, width)
        except (OSError, ValueError, pa.ArrowException):
            return None
        if not np.isfinite(embeddings).all():
            return None
        # A file no manifest vouches for must be exactly what writing its content gives: this
        # catches a flipped byte anywhere, also where Parquet keeps no checksum.
        if recorded is None and encode_shard(ids, embeddings, id_type, stamp) != data:
            return None
        return digest

    def start(self, corpus: Corpus) -> None:
        """Create the directory, remove temporaries of killed runs, write an incomplete manifest."""
        self.created = not self.path.exists()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise InputError(f"output directory {self.path} cannot be created "
                             f"({err.strerror}).") from None
        self._remove_temporaries()
        self._write_manifest(corpus, None)

    def finish(self, corpus: Corpus) -> None:
        """Prove every shard, then mark the manifest complete with the digests of their files."""
        digests = {shard.name: self.prove(shard, corpus.id_type) for shard in corpus.shards}
        missing = [name for name, digest in digests.items() if digest is None]
        if missing:
            raise InputError(f"output directory {self.path} lacks {len(missing)} shard(s) after "
                             f"the run (first: {missing[0]}); run the command again to complete "
                             f"them.")
        self._remove_temporaries()
        self._write_manifest(corpus, digests)

    def abandon(self) -> None:
        """After a failed run: remove the directory again if this run created it and it holds
        nothing but the manifest (no shard, no temporary file of a concurrent run), so that a
        refused run leaves nothing behind."""
        manifest = self.path / MANIFEST_NAME
        if self.created and [p.name for p in self.path.iterdir()] == [MANIFEST_NAME]:
            manifest.unlink(missing_ok=True)
            try:
                self.path.rmdir()
            except OSError:
                pass  # something appeared in it meanwhile: keep it

    def _remove_temporaries(self) -> None:
        for stale in self.path.glob(f".part-*{SUFFIX}.*.tmp"):
            stale.unlink(missing_ok=True)

    def _write_manifest(self, corpus: Corpus, digests: dict[str, str] | None) -> None:
        """The manifest; complete, with each shard file's sha256, once ``digests`` are known."""
        bad = [{"id": r.id, "file": r.file, "row": r.row, "reason": r.reason}
               for r in corpus.bad_rows]
        shards = [{"file": self.shard_path(s).name, "rows": s.embedded, "input_sha256": s.sha256}
                  | ({"sha256": digests[s.name]} if digests else {}) for s in corpus.shards]
        manifest = {"format": FORMAT, "complete": digests is not None, "model": self.model,
                    "model_sha256": self.model_sha256, "input": self.input, "rows": corpus.rows,
                    "embedded": corpus.rows - len(bad),
                    "bad_rows": {"count": len(bad), "rows": bad}, "shards": shards}
        data = (json.dumps(manifest, indent=1) + "\n").encode()
        atomic_write(self.path / MANIFEST_NAME, lambda stream: stream.write(data))


def _read_manifest(path: Path) -> dict[str, Any]:
    """An embed-corpus manifest of this format, its shape checked; else one sentence."""
    manifest = read_json(path, "manifest", error=InputError)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise InputError(f"manifest {path} is not an embed-corpus manifest of this version "
                         f"(format {short(found, quote=True)}, expected {FORMAT!r}); choose "
                         f"another directory.")
    shards = manifest.get("shards")
    if not (isinstance(manifest.get("model"), dict) and isinstance(manifest.get("input"), dict)
            and isinstance(shards, list) and all(
                isinstance(entry, dict) and isinstance(entry.get("file"), str)
                and isinstance(entry.get("sha256", ""), str) for entry in shards)):
        raise InputError(f"manifest {path} is not an embed-corpus manifest (its model, input or "
                         f"shards are malformed); choose another directory.")
    return manifest


def shard_stamp(shard: Shard, model_sha256: str) -> bytes:
    """What a shard file is stamped with: the digests of its input rows and of the model."""
    return json.dumps({"input_sha256": shard.sha256, "model_sha256": model_sha256},
                      sort_keys=True).encode()


def _schema(id_type: str | None, width: int):
    import pyarrow as pa

    return pa.schema([("id", pa.int64() if id_type == "int" else pa.string()),
                      ("embedding", pa.list_(pa.float32(), width))])


def encode_shard(ids: list, embeddings: np.ndarray, id_type: str | None, stamp: bytes) -> bytes:
    """The Parquet file of ``ids`` and float32 ``embeddings`` (N, D): columns ``id`` (int64 or
    string, ``id_type``) and ``embedding`` (a fixed-size list of D float32), ``stamp``
    (:func:`shard_stamp`) in its metadata, page checksums on. The same content gives the same
    bytes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
    width = embeddings.shape[1]
    schema = _schema(id_type, width)
    column = pa.FixedSizeListArray.from_arrays(pa.array(embeddings.reshape(-1), pa.float32()),
                                               width)
    table = pa.table([pa.array(ids, schema.field("id").type), column],
                     schema=schema.with_metadata({STAMP_KEY: stamp}))
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, write_page_checksum=True)
    return sink.getvalue().to_pybytes()


def write_shard(path: Path, ids: list, embeddings: np.ndarray, id_type: str | None,
                stamp: bytes) -> None:
    """Write :func:`encode_shard` to ``path``; the file appears only once complete."""
    data = encode_shard(ids, embeddings, id_type, stamp)
    atomic_write(path, lambda stream: stream.write(data))


def read_embeddings(directory: str | Path) -> tuple[list, np.ndarray]:
    """All (ids, float32 (N, D) embeddings) of a finished output directory, in shard order."""
    import pyarrow.parquet as pq

    directory = Path(directory)
    manifest = _read_manifest(directory / MANIFEST_NAME)
    width = manifest["model"]["embedding_dim"]
    ids: list = []
    parts = []
    for shard in manifest["shards"]:
        table = pq.read_table(directory / shard["file"])
        ids += table.column("id").to_pylist()
        flat = table.column("embedding").combine_chunks().flatten().to_numpy()
        parts.append(flat.reshape(len(table), width))
    return ids, np.concatenate(parts) if parts else np.zeros((0, width), np.float32)
