"""The order of training sequences: files sampled by size, shuffled in a window, per seed.

An epoch reads every file once. Each next sequence comes from a file drawn with probability
proportional to its size in bytes among the files not yet finished, so files of different sizes
finish together and each contributes in proportion to its size throughout. Sequences then pass
through a shuffle window of ``window`` sequences: the stream never holds more than that, whatever
the corpus size. Every draw of epoch ``e`` comes from a generator seeded by ``(seed, e)``, so the
order is a function of the files, the tokenizer, the length and the seed.

:class:`Batches` cuts the stream into global batches; the batch of step ``n`` is the ``n``-th, so
a resumed run reads the stream again up to its step (tokenising what it skips).
"""

from __future__ import annotations

from typing import Iterator

import torch

from ..errors import InputError
from .documents import DocumentFile
from .packing import SequencePacker

SHUFFLE_WINDOW = 4096  # sequences held for shuffling


class SequenceStream:
    """Endless training sequences over ``files``, epoch after epoch.

    Args:
        files: the corpus.
        packer: tokenises and packs documents into sequences.
        seed: fixes the file draws and the shuffle.
        window: sequences held by the shuffle (1: file order, files interleaved by size).
    """

    def __init__(self, files: list[DocumentFile], packer: SequencePacker, seed: int,
                 window: int = SHUFFLE_WINDOW):
        if not files:
            raise InputError("pretraining needs at least one corpus file.")
        self.files, self.packer, self.seed, self.window = files, packer, seed, window
        self.sizes = [max(1, corpus.size) for corpus in files]

    def check(self) -> None:
        """Refuse a corpus without one full sequence (reads only what the first one needs)."""
        if next(self.epoch(0), None) is None:
            names = ", ".join(str(corpus.path) for corpus in self.files)
            raise InputError(f"the corpus ({names}) holds fewer than {self.packer.length} tokens, "
                             f"not one sequence of --max-seq-length; add text or lower it.")

    def __iter__(self) -> Iterator[list[int]]:
        epoch = 0
        while True:
            produced = False
            for sequence in self.epoch(epoch):
                produced = True
                yield sequence
            if not produced:
                return
            epoch += 1

    def epoch(self, epoch: int) -> Iterator[list[int]]:
        """One pass over the corpus, in this epoch's order."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        sources = [self.packer(corpus) for corpus in self.files]
        weights = torch.tensor(self.sizes, dtype=torch.float64)
        held: list[list[int]] = []
        while bool(weights.sum() > 0):
            source = int(torch.multinomial(weights, 1, generator=generator))
            sequence = next(sources[source], None)
            if sequence is None:
                weights[source] = 0
                continue
            held.append(sequence)
            if len(held) >= self.window:
                yield _take(held, generator)
        while held:
            yield _take(held, generator)


def _take(held: list[list[int]], generator: torch.Generator) -> list[int]:
    """Remove and return a uniformly drawn item of ``held`` (order of the rest is irrelevant)."""
    index = int(torch.randint(len(held), (1,), generator=generator))
    held[index], held[-1] = held[-1], held[index]
    return held.pop()


class Batches:
    """Global batches of ``batch_size`` sequences: batch ``n`` is the stream's ``n``-th.

    Asked for steps in increasing order (as a training loop does) it reads the stream once;
    asked for an earlier step it starts the stream again.
    """

    def __init__(self, stream: SequenceStream, batch_size: int):
        self.stream, self.batch_size = stream, batch_size
        self._iterator: Iterator[list[int]] = iter(stream)
        self._next = 0

    def batch(self, step: int) -> torch.Tensor:
        """(batch_size, length) int64 token ids of step ``step`` (0-based)."""
        if step < self._next:
            self._iterator, self._next = iter(self.stream), 0
        while self._next < step:
            self._read()
        return torch.tensor(self._read(), dtype=torch.int64)

    def _read(self) -> list[list[int]]:
        rows = [next(self._iterator, None) for _ in range(self.batch_size)]
        if rows[-1] is None:  # only an empty corpus ends the endless stream
            raise InputError("the corpus holds no complete sequence.")
        self._next += 1
        return rows
