"""Contrastive training data: files of (anchor, positive, negatives...) texts and the batch schedule.

A data file is ``.jsonl`` or ``.parquet``. Each example is an anchor, a positive and any number of
hard negatives; within one file every example has the same number. In ``.jsonl``, a line is an
object with string fields ``anchor``, ``positive`` and optionally ``negative``, or ``negative_1``,
``negative_2``, ... (sentence-transformers' column names); or an array of two or more strings,
(anchor, positive, negatives...). A ``.parquet`` file has string columns of those names.

The schedule follows the model card: every batch comes from one file (so in-batch negatives share a
domain) and files are drawn in proportion to their size. Each epoch, every file's examples are
shuffled and cut into full batches (the remainder is dropped), and the batches of all files are
shuffled together; a file with twice the examples thus supplies twice the batches. The schedule is
a pure function of (data, batch size, seed, epoch), so the data position of a run is its step.

By default no text appears twice in a batch, as anchor, positive or negative (sentence-transformers'
no-duplicates batch sampler): a duplicate would be an in-batch negative for its own pair. Each
batch is filled in shuffled order, an example whose texts the batch already holds waiting for the
next batch; the examples that fit in no full batch are dropped for the epoch, so an epoch of a
file with many duplicates has fewer batches.

Ranks of a distributed run slice each global batch contiguously: with ``W`` processes and a global
batch of ``B`` examples, rank ``r`` takes examples ``[r * B / W, (r + 1) * B / W)`` of it. The
global batch at a step is therefore the same set of examples whatever ``W`` is.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

from ..errors import InputError
from ..inputs import json_lines, open_input, parquet_file, record_field, string_rows
from .rng import derived_seed

COLUMNS = ("anchor", "positive")
SUFFIXES = (".jsonl", ".parquet")
_NUMBERED_NEGATIVE = re.compile(r"negative_([1-9]\d*)")


@dataclass(frozen=True)
class PairFile:
    """The examples of one data file, as parallel lists; ``negatives`` holds one list per hard
    negative column (none for pairs)."""

    path: Path
    anchors: list[str]
    positives: list[str]
    negatives: list[list[str]]

    def __len__(self) -> int:
        return len(self.anchors)

    def take(self, indices: list[int]) -> tuple[list[str], list[str], list[list[str]]]:
        """Anchors, positives and negative columns of the examples at ``indices``."""
        return ([self.anchors[i] for i in indices], [self.positives[i] for i in indices],
                [[column[i] for i in indices] for column in self.negatives])

    def texts(self, index: int) -> list[str]:
        """Every text of example ``index``: anchor, positive, negatives."""
        return [self.anchors[index], self.positives[index],
                *(column[index] for column in self.negatives)]


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
            raise InputError(f"data file {path} mixes examples with {len(row) - 2} and "
                             f"{len(columns) - 2} hard negatives (example {number} and example "
                             f"1).")
        for column, text in zip(columns, row):
            column.append(text)
    if columns is None:
        raise InputError(f"data file {path} holds no examples.")
    return PairFile(path, columns[0], columns[1], list(columns[2:]))


def negative_columns(names: list[str]) -> list[str]:
    """The hard-negative column names among ``names``, in order: ``negative``, or ``negative_1``
    to ``negative_K`` (InputError for a gap or for both kinds)."""
    numbered = sorted(int(m.group(1)) for name in names
                      if (m := _NUMBERED_NEGATIVE.fullmatch(name)))
    if numbered and "negative" in names:
        raise InputError("has both 'negative' and 'negative_1'...; name the columns one way")
    if numbered != list(range(1, len(numbered) + 1)):
        missing = min(set(range(1, len(numbered) + 1)) - set(numbered))
        raise InputError(f"has negative columns up to 'negative_{numbered[-1]}' but no "
                         f"'negative_{missing}'")
    return ["negative"] if "negative" in names else [f"negative_{n}" for n in numbered]


def _jsonl_rows(path: Path) -> Iterator[tuple[str, ...]]:
    with open_input(path, "data file") as stream:
        for line, record in json_lines(stream, f"data file {path}"):
            yield _row(record, line.where)


def _row(record, where: str) -> tuple[str, ...]:
    if isinstance(record, list):
        if len(record) < 2 or not all(isinstance(t, str) for t in record):
            raise InputError(f"{where} is an array but not of 2 or more strings (anchor, positive"
                             f", negatives...).")
        return tuple(record)
    if not isinstance(record, dict):
        raise InputError(f"{where} is neither an object nor an array.")
    try:
        negatives = negative_columns([name for name, value in record.items() if value is not None])
    except InputError as err:
        raise InputError(f"{where} {err}.") from None
    return tuple(record_field(record, column, where) for column in (*COLUMNS, *negatives))


def _parquet_rows(path: Path) -> Iterator[tuple[str, ...]]:
    names = parquet_file(path, "data file", list(COLUMNS)).schema_arrow.names
    try:
        columns = [*COLUMNS, *negative_columns(names)]
    except InputError as err:
        raise InputError(f"data file {path} {err}.") from None
    return string_rows(path, columns, "data file")


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
        files: the data files.
        batch_size: examples per global batch (across all ranks).
        seed: fixes the shuffle of every epoch.
        no_duplicates: keep every text at most once per batch (see the module docstring).
    """

    def __init__(self, files: list[PairFile], batch_size: int, seed: int,
                 no_duplicates: bool = True):
        if batch_size < 2:
            raise InputError(f"the batch size must be at least 2 for in-batch negatives, got "
                             f"{batch_size}.")
        for data in files:
            if len(data) < batch_size:
                raise InputError(f"data file {data.path} holds {len(data)} examples, fewer than "
                                 f"the batch size {batch_size}; lower --batch-size or add data.")
        self.files, self.batch_size, self.seed = files, batch_size, seed
        self.no_duplicates = no_duplicates
        self._lengths: list[int] = []
        self._cached: tuple[int, list[Batch]] | None = None
        if not self.epoch(0):
            raise InputError(f"no batch of {batch_size} examples without a repeated text can be "
                             f"formed from {', '.join(str(f.path) for f in files)}; lower "
                             f"--batch-size or pass --allow-duplicates.")

    def epoch(self, epoch: int) -> list[Batch]:
        """The global batches of ``epoch``, in training order."""
        if self._cached is None or self._cached[0] != epoch:
            generator = torch.Generator().manual_seed(derived_seed(self.seed, epoch))
            batches = []
            for number, data in enumerate(self.files):
                order = torch.randperm(len(data), generator=generator).tolist()
                cut = _without_duplicates(data, order, self.batch_size) if self.no_duplicates \
                    else [order[start:start + self.batch_size]
                          for start in range(0, len(data) - self.batch_size + 1, self.batch_size)]
                batches += [Batch(number, indices) for indices in cut]
            shuffled = torch.randperm(len(batches), generator=generator).tolist()
            self._cached = (epoch, [batches[i] for i in shuffled])
        return self._cached[1]

    def epoch_length(self, epoch: int) -> int:
        """Batches in ``epoch`` (the same for every epoch unless duplicates are avoided)."""
        while len(self._lengths) <= epoch:
            self._lengths.append(len(self.epoch(len(self._lengths))))
        return self._lengths[epoch]

    def steps(self, epochs: int) -> int:
        """Steps in the first ``epochs`` epochs."""
        return sum(self.epoch_length(epoch) for epoch in range(epochs))

    def batch(self, step: int) -> Batch:
        """The global batch of training step ``step`` (0-based), across epochs."""
        epoch = 0
        while step >= self.epoch_length(epoch):
            step -= self.epoch_length(epoch)
            epoch += 1
        return self.epoch(epoch)[step]


def _without_duplicates(data: PairFile, order: list[int], batch_size: int) -> list[list[int]]:
    """Full batches of ``order``'s examples with no text twice in one batch; an example that
    clashes waits, in order, for the next batch."""
    waiting, batches = deque(order), []
    while len(waiting) >= batch_size:
        batch, seen, clashing = [], set(), []
        while waiting and len(batch) < batch_size:
            index = waiting.popleft()
            texts = data.texts(index)
            if seen.isdisjoint(texts):
                batch.append(index)
                seen.update(texts)
            else:
                clashing.append(index)
        waiting.extendleft(reversed(clashing))
        if len(batch) < batch_size:
            break
        batches.append(batch)
    return batches
