"""A needle-in-a-haystack retrieval task in LongEmbed's form, generated offline from a seed.

**Haystacks** are real prose cut to each length: by default the paragraphs of the Python
language reference that ship with the interpreter (``pydoc_data.topics``, the pretraining
experiment's corpus; nothing is downloaded), or any ``--haystack`` file. The text is split into
sentences and laid in a ring; each document starts at a sentence of its own, drawn at random, and
takes the following sentences while they fit. Sentences longer than :data:`MAX_SENTENCE_TOKENS`
(code listings, grammar rules) are left out, which keeps every document within one short sentence
of its length.

**Needles** are facts built from templates, (person, attribute, value): "Orla Fenwick's favourite
colour is teal." with the question "What is Orla Fenwick's favourite colour?". Every document
has its own person, so each question is answered by one fact only, and a name part that occurs
in the haystack is never used, so no question is answered by the haystack. As for the passkey
task, 50 queries search 100 documents at each length; documents 50-99 hold facts that no query
asks for.

LongEmbed's needle task differs in its material: its haystacks are Paul Graham's essays and its
needles and questions were written by GPT-4. Scores here are therefore comparable to LongEmbed's
in kind (how retrieval holds up with length and depth), not in value.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..inputs import documents as file_documents
from .documents import (DOCUMENTS, QUERIES, Task, TokenCounter, Units, assemble, check_counts,
                        check_room, document_depths, sentences)
from .names import distinct_names

MAX_SENTENCE_TOKENS = 64
DEFAULT_HAYSTACK = "the Python language reference (pydoc_data.topics)"

# (fact, question, values): {name} is the person, {value} the answer.
TEMPLATES = (
    ("{name}'s favourite colour is {value}.", "What is {name}'s favourite colour?",
     ("teal", "crimson", "ochre", "lilac", "saffron", "olive", "cobalt", "amber")),
    ("{name} keeps a pet {value} in the garden.", "What pet does {name} keep?",
     ("tortoise", "hedgehog", "ferret", "peacock", "goat", "donkey", "parrot", "llama")),
    ("{name} was born in a village called {value}.", "In which village was {name} born?",
     ("Brackenmoor", "Wexcombe", "Hollowmere", "Thistledown", "Ravensholt", "Marlowby",
      "Eddersfield", "Quenby")),
    ("{name} plays the {value} in a brass band on Sundays.", "Which instrument does {name} play?",
     ("tuba", "cornet", "euphonium", "trombone", "flugelhorn", "baritone horn")),
    ("The secret ingredient of {name}'s soup is {value}.",
     "What is the secret ingredient of {name}'s soup?",
     ("nutmeg", "smoked paprika", "fennel seed", "lemon zest", "star anise", "tarragon")),
    ("{name} works as a {value} by the harbour.", "What is {name}'s job?",
     ("lighthouse keeper", "sailmaker", "fishmonger", "ferry pilot", "net mender",
      "harbour master")),
)


@dataclass(frozen=True)
class Haystack:
    """The sentences that documents are cut from, and the lower-cased words they use."""

    source: str
    units: Units
    words: frozenset[str]

    @classmethod
    def from_texts(cls, texts: Iterable[str], counter: TokenCounter, source: str) -> Haystack:
        """Split ``texts`` (read in order, as one text) into sentences and count their tokens.

        Raises:
            InputError: no sentence of 1 to :data:`MAX_SENTENCE_TOKENS` tokens.
        """
        text = " ".join(texts)
        if not text.strip():
            raise InputError(f"{source} holds no text.")
        parts = sentences(text)
        kept = [(part, count) for part, count in zip(parts, counter(parts))
                if 1 <= count <= MAX_SENTENCE_TOKENS]
        if not kept:
            raise InputError(f"{source} holds no sentence of at most {MAX_SENTENCE_TOKENS} "
                             f"tokens.")
        words = frozenset(word.lower() for part, _ in kept for word in _words(part))
        return cls(source, Units([p for p, _ in kept], [c for _, c in kept]), words)

    @classmethod
    def read(cls, path: str | Path | None, counter: TokenCounter) -> Haystack:
        """The haystack of a ``.txt`` (lines of prose), ``.jsonl`` or ``.parquet`` file (field
        ``text``), or with ``path`` None the language reference."""
        if path is None:
            from ..pretraining.stdlib_corpus import reference_documents

            return cls.from_texts(reference_documents(), counter, DEFAULT_HAYSTACK)
        return cls.from_texts(file_documents(path, "text", "haystack file"), counter,
                              f"haystack file {path}")


def _words(text: str) -> list[str]:
    return "".join(c if c.isalnum() else " " for c in text).split()


def needle_task(counter: TokenCounter, haystack: Haystack, length: int, seed: int,
                queries: int = QUERIES, documents: int = DOCUMENTS) -> Task:
    """The needle task at ``length`` tokens; the same ``seed``, haystack and length give the same
    task whatever other lengths are asked for.

    Raises:
        InputError: ``length`` has no room for a fact, or the haystack uses too many names.
    """
    check_counts(queries, documents)
    rng = random.Random(f"needle:{seed}:{length}")
    names = distinct_names(rng, documents, haystack.words)
    facts, questions = [], []
    for name in names:
        fact, question, values = rng.choice(TEMPLATES)
        facts.append(fact.format(name=name, value=rng.choice(values)))
        questions.append(question.format(name=name))
    starts = [rng.randrange(len(haystack.units.texts)) for _ in range(documents)]
    depths = document_depths(rng, queries, documents)
    counts = counter(facts)
    check_room("needle sentence", length, counts, counter.special_tokens)
    docs = [assemble(haystack.units, start, fact, tokens, length, depth, counter.special_tokens)
            for fact, tokens, start, depth in zip(facts, counts, starts, depths)]
    return Task("needle", length, questions[:queries], docs)
