"""LongEmbed's passkey retrieval task, generated from a seed.

Every document is LongEmbed's filler ("The grass is green. The sky is blue. ...") repeated to
the target length in the model's tokens, with one key sentence at a depth:
"<name>'s pass key is <number>. Remember it. <number> is the pass key for <name>." A query asks
"What is the pass key for <name>?"; only the document with that name answers it. At each length
50 queries search 100 documents (LongEmbed's counts): documents 0-49 answer queries 0-49 and
documents 50-99 hold the keys of 50 other people. Names are different within a length, keys are
five-digit numbers, different within a length.

The filler is the same in every document, so the documents of one length differ only by their
key sentence and where it stands: a model that never reads it cannot tell them apart.
"""

from __future__ import annotations

import random

from .documents import (DOCUMENTS, QUERIES, Task, TokenCounter, Units, assemble, check_counts,
                        check_room, document_depths)
from .names import distinct_names

FILLER = ("The grass is green.", "The sky is blue.", "The sun is yellow.", "Here we go.",
          "There and back again.")


def key_sentence(name: str, key: int) -> str:
    return f"{name}'s pass key is {key}. Remember it. {key} is the pass key for {name}."


def query(name: str) -> str:
    return f"What is the pass key for {name}?"


def passkey_task(counter: TokenCounter, length: int, seed: int, queries: int = QUERIES,
                 documents: int = DOCUMENTS) -> Task:
    """The passkey task at ``length`` tokens; the same ``seed`` and length give the same task
    whatever other lengths are asked for.

    Raises:
        InputError: ``length`` has no room for a key sentence.
    """
    check_counts(queries, documents)
    rng = random.Random(f"passkey:{seed}:{length}")
    names = distinct_names(rng, documents)
    keys = rng.sample(range(10_000, 100_000), documents)
    depths = document_depths(rng, queries, documents)
    filler = Units(list(FILLER), counter(list(FILLER)))
    needles = [key_sentence(name, key) for name, key in zip(names, keys)]
    counts = counter(needles)
    check_room("passkey sentence", length, counts, counter.special_tokens)
    docs = [assemble(filler, 0, needle, tokens, length, depth, counter.special_tokens)
            for needle, tokens, depth in zip(needles, counts, depths)]
    return Task("passkey", length, [query(name) for name in names[:queries]], docs)
