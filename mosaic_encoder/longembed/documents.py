"""Documents of a chosen length in a model's tokens, with one sentence (the needle) at a depth.

Both of LongEmbed's synthetic tasks build their candidate documents alike: text units (filler
sentences, or the sentences of real prose) laid end to end up to a target length, and between two
of them the one sentence that answers a query. Here:

- **Length** counts the tokens the model is given for the document without a prompt: the special
  tokens its tokenizer adds ([CLS] and [SEP]) and the text's. Units are added while they fit, so
  a document is never longer than its target and shorter by less than one unit: a 256-token
  document is never truncated by a 256-token model.
- **Depth** is the share of the surrounding text that comes before the needle: 0 when it opens
  the document, 1 when it closes it. The needle goes to the unit boundary nearest to the drawn
  depth, and the document records where it really is.

Token counts are added up unit by unit: BERT's WordPiece splits words at whitespace and
punctuation, so units joined by a space have as many tokens together as apart (a test checks
this against the tokenizer on whole documents).
"""

from __future__ import annotations

import bisect
import itertools
import random
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..tokenizer import TextTokenizer

# Queries and candidate documents of a task at one length: LongEmbed's counts.
QUERIES = 50
DOCUMENTS = 100

# A sentence ends at ., ! or ? followed by whitespace.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def sentences(text: str) -> list[str]:
    """The sentences of ``text``, whitespace collapsed: a cut after every ``.``, ``!`` or ``?``
    followed by whitespace (a rule for prose; abbreviations such as "e.g." cut too)."""
    return [part for part in _SENTENCE_END.split(" ".join(text.split())) if part]


class TokenCounter:
    """Token counts in a checkpoint's tokenizer, never truncated.

    Args:
        tokenizer_file: the checkpoint's ``tokenizer.json``.
        lower_case: lower-case texts first, as the checkpoint's ``do_lower_case`` asks.
    """

    def __init__(self, tokenizer_file: str | Path, lower_case: bool = False):
        self._tokenizer = TextTokenizer(tokenizer_file, None, lower_case)
        self.special_tokens = len(self._tokenizer.encode_ids([""])[0][0])

    def __call__(self, texts: list[str]) -> list[int]:
        """Tokens of each text, the special tokens left out."""
        ids, _, _ = self._tokenizer.encode_ids(texts)
        return [len(row) - self.special_tokens for row in ids]


@dataclass(frozen=True)
class Document:
    """A candidate document.

    Attributes:
        text: the document.
        tokens: its length: special tokens included.
        needle_offset: tokens of text before the needle.
        needle_tokens: the needle's own tokens.
        depth: ``needle_offset`` over the tokens of text that are not the needle, in [0, 1].
    """

    text: str
    tokens: int
    needle_offset: int
    needle_tokens: int
    depth: float


@dataclass(frozen=True)
class Task:
    """One task at one length: query ``i`` is answered by document ``i`` and by no other; the
    documents past the queries are distractors."""

    name: str
    length: int
    queries: list[str]
    documents: list[Document]


@dataclass(frozen=True)
class Units:
    """Text units and their token counts (special tokens left out), laid end to end in a ring:
    the unit after the last is the first."""

    texts: list[str]
    counts: list[int]

    def __post_init__(self):
        if not self.texts or min(self.counts) < 1:
            raise ValueError("units need at least one unit, each of at least one token.")


def assemble(units: Units, start: int, needle: str, needle_tokens: int, length: int,
             depth: float, special_tokens: int) -> Document:
    """A document of at most ``length`` tokens: the units from ``start`` on (round the ring), as
    many as fit beside the needle, with the needle at the unit boundary nearest to ``depth``.

    The caller checks that ``length`` has room for the needle (:func:`check_room`).
    """
    room = length - special_tokens - needle_tokens
    chosen, ends = [], [0]
    for index in itertools.islice(itertools.cycle(range(len(units.texts))), start, None):
        if ends[-1] + units.counts[index] > room:
            break
        chosen.append(units.texts[index])
        ends.append(ends[-1] + units.counts[index])
    # The boundary nearest to the drawn depth (the earlier one on a tie).
    target = depth * ends[-1]
    at = bisect.bisect_left(ends, target)
    if at == len(ends) or (at > 0 and target - ends[at - 1] <= ends[at] - target):
        at -= 1
    text = " ".join([*chosen[:at], needle, *chosen[at:]])
    return Document(text, special_tokens + ends[-1] + needle_tokens, ends[at], needle_tokens,
                    ends[at] / ends[-1] if ends[-1] else 0.0)


def stratified_depths(rng: random.Random, count: int) -> list[float]:
    """``count`` depths in [0, 1), one in each of ``count`` equal slices, in random order: uniform
    like LongEmbed's draws, but every tenth of the depth range holds a tenth of them (when
    ``count`` is a multiple of ten)."""
    slices = list(range(count))
    rng.shuffle(slices)
    return [(k + rng.random()) / count for k in slices]


def document_depths(rng: random.Random, queries: int, documents: int) -> list[float]:
    """Depths of the answering documents, then of the distractors, each group stratified."""
    return stratified_depths(rng, queries) + stratified_depths(rng, documents - queries)


def check_counts(queries: int, documents: int) -> None:
    if not 1 <= queries <= documents:
        raise InputError(f"a task needs at least one query and no more queries than documents, "
                         f"got {queries} queries and {documents} documents.")



def check_room(what: str, length: int, needle_tokens: list[int], special_tokens: int) -> None:
    """Refuse a ``length`` too short for the longest needle with the special tokens."""
    need = max(needle_tokens) + special_tokens
    if length < need:
        raise InputError(f"length {length} is shorter than the {what} itself ({need} tokens with "
                         f"the special tokens, at this seed); use lengths of at least {need}.")
