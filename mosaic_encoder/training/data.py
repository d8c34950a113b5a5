"""Contrastive training data: files of (anchor, positive[, negative]) texts and the batch schedule.

A data file is ``.jsonl`` (one object per line with string fields ``anchor``, ``positive`` and
optionally ``negative``; or one JSON array of two or three strings) or ``.parquet`` (string columns
of the same names). Within one file either every example has a hard negative or none has.

The schedule follows the model card: every batch comes from one file (so in-batch negatives share a
domain) and files are drawn in proportion to their size. Each epoch, every file's examples are
shuffled and cut into full batches (the remainder is dropped), and the batches of all files are
shuffled together; a file with twice the examples thus supplies twice the batches. The schedule is
a pure function of (sizes, batch size, seed, epoch), so the data position of a run is its step.

Ranks of a distributed run slice each global batch contiguously: with ``W`` processes and a global
batch of ``B`` examples, rank ``r`` takes examples ``[r * B / W, (r + 1) * B / W)`` of it. The
global batch at a step is therefore the same set of examples whatever ``W`` is.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

from ..errors import InputError
from ..inputs import json_lines, open_input, parquet_file, record_field, string_rows
from .rng import derived_seed

COLUMNS = ("anchor", "positive", "negative")
SUFFIXES = (".jsonl", ".parquet")


@dataclass(frozen=True)
class PairFile:
    """The examples of one data file, as parallel lists; ``negatives`` is None for pairs."""

    path: Path
    anchors: list[str]
    positives: list[str]
    negatives: list[str] | None

    def __len__(self) -> int:
        return len(self.anchors)

    def take(self, indices: list[int]) -> tuple[list[str], list[str], list[str] | None]:
        """Anchors, positives and negatives (or None) of the examples at ``indices``."""
        negatives = None if self.negatives is None else [self.negatives[i] for i in indices]
        return [self.anchors[i] for i in indices], [self.positives[i] for i in indices], negatives


def read_pair_file(path: str | Path) -> PairFile:
    """Read and check one ``.jsonl`` or ``.parquet`` file of pairs or triplets.

    The file is streamed (:mod:`mosaic_encoder.inputs`): memory holds the texts, not the file.

    Raises:
        InputError: one sentence naming the file (and line or column) for a missing, empty or
            non-regular file, non-UTF-8 text, invalid JSON, a missing or non-string field, or
            mixed pairs/triplets.
    """
    path = Path(path)
    if path.suffix not in SUFFIXES:
        raise InputError(f"data file {path} must end in .jsonl or .parquet.")
    columns: tuple[list[str], ...] | None = None
    for number, row in enumerate(_parquet_rows(path) if path.suffix == ".parquet"
                                 else _jsonl_rows(path), start=1):
        if columns is None:
            columns = tuple([] for _ in row)
        if len(row) != len(columns):
            raise InputError(f"data file {path} mixes pairs and triplets (example {number} "
                             f"{'has' if len(row) == 3 else 'lacks'} a negative, example 1 "
                             f"{'has' if len(columns) == 3 else 'lacks'} one).")
        for column, text in zip(columns, row):
            column.append(text)
    if columns is None:
        raise InputError(f"data file {path} holds no examples.")
    return PairFile(path, columns[0], columns[1], columns[2] if len(columns) == 3 else None)


def _jsonl_rows(path: Path) -> Iterator[tuple[str, ...]]:
    with open_input(path, "data file") as stream:
        for line, record in json_lines(stream, f"data file {path}"):
            yield _row(record, line.where)


def _row(record, where: str) -> tuple[str, ...]:
    if isinstance(record, list):
        if len(record) not in (2, 3) or not all(isinstance(t, str) for t in record):
            raise InputError(f"{where} is an array but not of 2 or 3 strings (anchor, positive"
                             f"[, negative]).")
        return tuple(record)
    if not isinstance(record, dict):
        raise InputError(f"{where} is neither an object nor an array.")
    texts = tuple(record_field(record, column, where) for column in COLUMNS[:2])
    if record.get("negative") is None:
        return texts
    return texts + (record_field(record, "negative", where),)


def _parquet_rows(path: Path) -> Iterator[tuple[str, ...]]:
    names = parquet_file(path, "data file", list(COLUMNS[:2])).schema_arrow.names
    return string_rows(path, [c for c in COLUMNS if c in names], "data file")


@dataclass(frozen=True)
class Batch:
    """One global batch: ``size`` examples of file ``file`` at positions ``indices`` in it."""

    file: int
    indices: list[int]

    def shard(self, rank: int, world_size: int) -> list[int]:
        """This rank's contiguous slice of the batch (see the module docstring)."""
        per_rank = len(self.indices) // world_size
        return self.indices[rank * per_rank:(rank + 1) * per_rank]


class BatchSchedule:
    """Which examples make up the global batch of each step.

    Args:
        files: the data files (paths are only used in messages).
        batch_size: examples per global batch (across all ranks).
        seed: fixes the shuffle of every epoch.
    """

    def __init__(self, files: list[PairFile], batch_size: int, seed: int):
        if batch_size < 2:
            raise InputError(f"the batch size must be at least 2 for in-batch negatives, got "
                             f"{batch_size}.")
        for data in files:
            if len(data) < batch_size:
                raise InputError(f"data file {data.path} holds {len(data)} examples, fewer than "
                                 f"the batch size {batch_size}; lower --batch-size or add data.")
        self.sizes = [len(data) for data in files]
        self.batch_size = batch_size
        self.seed = seed
        self.steps_per_epoch = sum(size // batch_size for size in self.sizes)
        self._cached: tuple[int, list[Batch]] | None = None

    def epoch(self, epoch: int) -> list[Batch]:
        """The global batches of ``epoch``, in training order."""
        if self._cached is None or self._cached[0] != epoch:
            generator = torch.Generator().manual_seed(derived_seed(self.seed, epoch))
            batches = []
            for file, size in enumerate(self.sizes):
                order = torch.randperm(size, generator=generator).tolist()
                batches += [Batch(file, order[start:start + self.batch_size])
                            for start in range(0, size - self.batch_size + 1, self.batch_size)]
            shuffled = torch.randperm(len(batches), generator=generator).tolist()
            self._cached = (epoch, [batches[i] for i in shuffled])
        return self._cached[1]

    def batch(self, step: int) -> Batch:
        """The global batch of training step ``step`` (0-based), across epochs."""
        return self.epoch(step // self.steps_per_epoch)[step % self.steps_per_epoch]
