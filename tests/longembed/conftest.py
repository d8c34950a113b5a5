"""Fixtures of the LongEmbed tests: the bundled tokenizer's token counts, the default haystack,
and a toy embedder that reads names."""

import numpy as np
import pytest

from helpers import TINY
from mosaic_encoder.longembed.documents import TokenCounter
from mosaic_encoder.longembed.names import FAMILY, GIVEN
from mosaic_encoder.longembed.needle import Haystack
from mosaic_encoder.tokenizer import TextTokenizer

TOKENIZER = TINY / "tokenizer.json"


@pytest.fixture(scope="session")
def counter() -> TokenCounter:
    return TokenCounter(TOKENIZER)


@pytest.fixture(scope="session")
def haystack(counter) -> Haystack:
    return Haystack.read(None, counter)


class NameReader:
    """A toy embedder that knows which people a text names, among what it reads: the first
    ``max_seq_length`` tokens (all of them with None).

    Dimension k of an embedding is 1 when the text names the k-th of all given x family names:
    a query and the document about the same person score 1, and a text that names nobody is the
    zero vector, level with every other. It reads the text back from its tokens, so truncation
    cuts exactly what a model would not see.
    """

    def __init__(self, max_seq_length: int | None = None):
        self.max_seq_length = max_seq_length
        self.tokenizer = TextTokenizer(TOKENIZER, max_seq_length)
        self.names = {f"{g} {f}".lower(): k
                      for k, (g, f) in enumerate((g, f) for g in GIVEN for f in FAMILY)}

    def encode(self, sentences, batch_size=32, max_tokens_per_batch=None, prompt=None,
               show_progress_bar=None):
        ids, _, _ = self.tokenizer.encode_ids([(prompt or "") + s for s in sentences])
        out = np.zeros((len(ids), len(self.names)), dtype=np.float32)
        for row, words in enumerate(map(self._words, ids)):
            for pair in map(" ".join, zip(words, words[1:])):
                if pair in self.names:
                    out[row, self.names[pair]] = 1.0
        return out

    def _words(self, ids: list[int]) -> list[str]:
        """The lower-cased words the tokens spell, specials left out."""
        words = []
        for token in map(self.tokenizer.id_to_token, ids[1:-1]):
            if token.startswith("##") and words:
                words[-1] += token[2:]
            else:
                words.append(token)
        return words
