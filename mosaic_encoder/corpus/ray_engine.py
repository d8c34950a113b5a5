"""The Ray engine: Ray Data maps the shards over a pool of actors, each holding one model.

The dataset is the list of missing shards (one block each); ``map_batches`` hands them to a pool
of ``num_workers`` :class:`ShardEmbedder` actors, which load the model once, read their shard's
rows from the input files and write its Parquet file through a temporary name. Ray schedules the
actors (one per GPU with ``gpus_per_worker=1``), restarts an actor whose process dies and retries
its shard, and shows progress. Shard files are written by the actors rather than by
``Dataset.write_parquet`` because the shard assignment must depend on the input alone (so that a
rerun completes exactly the missing shards) and a file must appear only once complete.

Every option is checked before any work (:func:`check_options`): the numbers, the address's
form, and that a gRPC server (Ray's GCS, or its client server behind ``ray://``) answers at it
within :data:`CONNECT_TIMEOUT_S`: Ray itself retries an unreachable address, or one where
another kind of server listens, for many minutes, printing three warnings every 40 seconds.
Once connected, a pool that no node of the cluster can hold (more CPUs or GPUs per worker, or
more workers, than the cluster has) is refused at once, where Ray Data would wait for the
resources forever.

While Ray runs, what it writes to the process's stderr (its C++ core's log lines, such as an
error-level notice about actor constructor arguments on a run that succeeds, and Ray Data's
progress) goes to a log file instead (:func:`mosaic_encoder.logs.stderr_to`): the command's
stderr holds its own lines, and a failure's sentence names the file (removed, as after a
success, when Ray wrote nothing).

Ray is imported only when :func:`run_ray` runs: ``pip install -e ".[ray]"``.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, MosaicError
from ..files import short
from ..logs import quieted, stderr_to
from .embedding import embed_shard
from .reading import Shard
from .settings import CorpusSettings
from .shards import OutputDirectory

CONNECT_TIMEOUT_S = 10
# An HTTP/2 client's connection preface and an empty SETTINGS frame: a gRPC server answers with
# a SETTINGS frame (frame type 4 in the fourth byte of its 9-byte header).
_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
_RAY_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"


class ShardEmbedder:
    """A Ray Data actor: loads the model once, then embeds and writes the shards it is given.

    Args:
        settings: :meth:`CorpusSettings.as_dict` of the run.
        output: the output directory (shared storage on a cluster).
        id_type: ``"int"`` or ``"str"``, the Parquet type of the ``id`` column.
        model_sha256: the model digest each shard file is stamped with.
    """

    def __init__(self, settings: dict[str, Any], output: str, id_type: str | None,
                 model_sha256: str):
        self.settings = CorpusSettings(**settings)
        self.output = Path(output)
        self.id_type = id_type
        self.model_sha256 = model_sha256
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
                                      self.output / f"{shard.name}.parquet", self.id_type,
                                      self.model_sha256)
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


def check_options(address: str | None = None, num_workers: int = 1, gpus_per_worker: float = 0,
                  cpus_per_worker: float = 1, embedder: type = ShardEmbedder) -> None:
    """Refuse impossible engine options in one sentence, before any work (see the module)."""
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 1:
        raise InputError(f"--num-workers must be a positive integer, got {short(num_workers)}.")
    for flag, value, least in (("--gpus-per-worker", gpus_per_worker, 0),
                               ("--cpus-per-worker", cpus_per_worker, None)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                not math.isfinite(value) or value < 0 or (least is None and value == 0):
            bound = "at least 0" if least == 0 else "above 0"
            raise InputError(f"{flag} must be a finite number {bound}, got {short(value)}.")
    if not (isinstance(embedder, type) and issubclass(embedder, ShardEmbedder)):
        raise InputError(f"embedder must be a subclass of ShardEmbedder, got {short(embedder)}.")
    if address is not None:
        _check_address(address)


def _check_address(address: str) -> None:
    """Refuse an address that is not ``auto``, ``HOST:PORT`` or ``ray://HOST:PORT``, or at which
    nothing accepts a connection within :data:`CONNECT_TIMEOUT_S`."""
    if not isinstance(address, str):
        raise InputError(f"--address must be a string, got {short(address)}.")
    if address in ("auto", "local"):
        return
    host, colon, port = address.removeprefix("ray://").rpartition(":")
    host = host.strip("[]")  # an IPv6 literal
    if not (colon and host and port.isdecimal() and 0 < int(port) < 65536):
        raise InputError(f"--address {short(address, quote=True)} is not auto, HOST:PORT or "
                         f"ray://HOST:PORT.")
    try:
        with socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S) as connection:
            connection.sendall(_HTTP2_PREFACE)
            answer = connection.recv(9)
    except socket.timeout:
        answer = b""
    except (OSError, UnicodeError) as err:
        reason = getattr(err, "strerror", None) or str(err) or type(err).__name__
        raise MosaicError(f"no Ray cluster answers at --address {address} ({reason}); start "
                          f"one there, or leave --address out to start a local Ray.") from None
    if len(answer) < 4 or answer[3] != 4:
        raise MosaicError(f"the server at --address {address} is not a Ray cluster (it does not "
                          f"answer as a gRPC server within {CONNECT_TIMEOUT_S} s); give the "
                          f"address of the head node's GCS (port 6379) or ray://HOST:10001.")


def _connect(ray, address: str | None) -> None:
    """``ray.init`` unless this process is connected already; failures in one sentence.

    Starting a local Ray, Ray warns that the cluster it starts has token authentication on by
    default: a notice about a cluster this process owns and stops, which would otherwise precede
    every line the command prints. It is silenced for that start only."""
    if ray.is_initialized():
        return
    try:
        starting_local = address is None and not os.environ.get("RAY_ADDRESS")
        with quieted(_RAY_AUTH_LOGGER) if starting_local else contextlib.nullcontext():
            ray.init(address=address, logging_level="WARNING")
    except (ConnectionError, ValueError, RuntimeError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise MosaicError(f"Ray cannot start or connect at --address {address or '(local)'} "
                          f"({short(reason, 160)}).") from None


def _check_room(ray, num_workers: int, gpus_per_worker: float, cpus_per_worker: float) -> None:
    """Refuse a pool the cluster's live nodes cannot hold, rather than wait for it forever."""
    nodes = [node.get("Resources", {}) for node in ray.nodes() if node.get("Alive")]

    def fits(resources: dict[str, float]) -> int:
        # A small tolerance, since 1.0 / 0.1 is 9.999... in floating point.
        counts = [math.floor(resources.get(name, 0) / need + 1e-9)
                  for name, need in (("CPU", cpus_per_worker), ("GPU", gpus_per_worker)) if need]
        return min(counts)

    room = sum(fits(resources) for resources in nodes)
    if room < num_workers:
        cpus = max((r.get("CPU", 0) for r in nodes), default=0)
        gpus = max((r.get("GPU", 0) for r in nodes), default=0)
        raise MosaicError(f"the Ray cluster has room for {room} of the {num_workers} worker(s) "
                          f"asked for ({cpus_per_worker:g} CPU and {gpus_per_worker:g} GPU each; "
                          f"its largest node has {cpus:g} CPU and {gpus:g} GPU); lower "
                          f"--num-workers, --cpus-per-worker or --gpus-per-worker.")


def run_ray(settings: CorpusSettings, shards: list[Shard], output: OutputDirectory,
            id_type: str | None, address: str | None = None, num_workers: int = 1,
            gpus_per_worker: float = 0, cpus_per_worker: float = 1,
            embedder: type = ShardEmbedder) -> int:
    """Embed ``shards`` on a Ray cluster; returns the number of rows written.

    Connects to ``address`` (``"auto"``, ``"ray://host:10001"``, ...) or starts a local Ray when
    none is given and this process has not called ``ray.init`` already. ``embedder`` is the actor
    class (a subclass of :class:`ShardEmbedder`). The options are those :func:`check_options`
    accepts.
    """
    try:
        import ray
    except ImportError:
        raise MosaicError('--engine ray needs Ray: pip install -e ".[ray]" (or use --engine '
                          'local).') from None
    if not shards:
        return 0
    log = Path(tempfile.gettempdir()) / f"mosaic-encoder-ray-{os.getpid()}.log"
    try:
        with stderr_to(log):
            written = _run(ray, settings, shards, output, id_type, address, num_workers,
                           gpus_per_worker, cpus_per_worker, embedder)
    except MosaicError as err:
        if not log.stat().st_size:  # Ray said nothing: no file to point at
            log.unlink()
            raise
        raise MosaicError(f"{str(err).rstrip('.')}; Ray's own messages are in {log}.") from None
    log.unlink(missing_ok=True)
    return written


def _run(ray, settings: CorpusSettings, shards: list[Shard], output: OutputDirectory,
         id_type: str | None, address: str | None, num_workers: int, gpus_per_worker: float,
         cpus_per_worker: float, embedder: type) -> int:
    """:func:`run_ray` once Ray is imported and there is work: connect, check, embed."""
    _connect(ray, address)
    _check_room(ray, num_workers, gpus_per_worker, cpus_per_worker)
    # Actors run in other processes, maybe on other nodes: they get absolute paths.
    settings = replace(settings, model=str(Path(settings.model).resolve()))
    dataset = ray.data.from_items([shard.as_dict() for shard in shards],
                                  override_num_blocks=len(shards))
    results = dataset.map_batches(
        embedder, batch_size=1,
        fn_constructor_kwargs={"settings": settings.as_dict(), "output": str(output.path.resolve()),
                               "id_type": id_type, "model_sha256": output.model_sha256},
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
