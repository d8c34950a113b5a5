"""Length-sorted batching of variable-length inputs, as sentence-transformers encodes a corpus.

Sorting by length before cutting batches keeps the padding of each batch small: the sequences
of one batch have similar lengths.
"""

from __future__ import annotations

from collections.abc import Sequence


def length_sorted_batches(lengths: Sequence[int], batch_size: int,
                          max_tokens: int | None = None) -> list[list[int]]:
    """Indices of ``lengths`` sorted longest first, cut into batches.

    A batch holds at most ``batch_size`` inputs and, when ``max_tokens`` is given, at most that
    many padded tokens (its size times its longest length), except that a single input longer
    than ``max_tokens`` still forms a batch of its own. Ties keep input order.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    batch: list[int] = []
    for index in order:
        # Sorted longest first, so the batch's padded length is that of its first member.
        padded = lengths[batch[0] if batch else index] * (len(batch) + 1)
        if batch and (len(batch) == batch_size or (max_tokens and padded > max_tokens)):
            batches.append(batch)
            batch = []
        batch.append(index)
    if batch:
        batches.append(batch)
    return batches
