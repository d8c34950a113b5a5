"""Documents to equal-length training sequences.

Each document is tokenised with the checkpoint's tokenizer and followed by ``[SEP]``; the
documents' tokens run on as one stream, cut every ``length - 1`` tokens, and each piece gets a
leading ``[CLS]``. Every sequence is thus exactly ``length`` tokens with no padding, a document may
span two sequences, and one sequence may hold several documents (the RoBERTa "full sentences"
packing). The tokens after the last full sequence are dropped.
"""

from __future__ import annotations

from itertools import islice
from typing import Iterable, Iterator

from ..errors import CheckpointError, InputError
from ..tokenizer import TextTokenizer

DOCUMENTS_PER_CALL = 256  # documents handed to the tokenizer at once (it runs them in parallel)


class SequencePacker:
    """Packs documents into sequences of ``length`` token ids.

    Args:
        tokenizer: a tokenizer without truncation (documents are cut by the packing).
        length: tokens per sequence, [CLS] included; at least 2.
    """

    def __init__(self, tokenizer: TextTokenizer, length: int):
        if length < 2:
            raise InputError(f"the sequence length must be at least 2 ([CLS] and one token), got "
                             f"{length}.")
        self.tokenizer, self.length = tokenizer, length
        ids = {name: tokenizer.token_to_id(name) for name in ("[CLS]", "[SEP]")}
        missing = [name for name, value in ids.items() if value is None]
        if missing:
            raise CheckpointError(f"tokenizer file {tokenizer.path} has no {missing[0]} token, "
                                  f"which sequence packing needs.")
        self.cls_id, self.sep_id = ids["[CLS]"], ids["[SEP]"]

    def __call__(self, documents: Iterable[str]) -> Iterator[list[int]]:
        """The sequences of ``documents``, in order, each a list of ``length`` ids."""
        documents = iter(documents)
        run = self.length - 1
        pending: list[int] = []
        while chunk := list(islice(documents, DOCUMENTS_PER_CALL)):
            ids, _, _ = self.tokenizer.encode_ids(chunk)
            for row in ids:
                pending += self._body(row)
                pending.append(self.sep_id)
            cut = len(pending) - len(pending) % run
            for start in range(0, cut, run):
                yield [self.cls_id] + pending[start:start + run]
            pending = pending[cut:]

    def _body(self, row: list[int]) -> list[int]:
        """A tokenised document without the [CLS] ... [SEP] the tokenizer wraps it in."""
        start = 1 if row and row[0] == self.cls_id else 0
        stop = len(row) - 1 if len(row) > start and row[-1] == self.sep_id else len(row)
        return row[start:stop]
