"""WordPiece tokenization through the checkpoint's ``tokenizer.json`` (``tokenizers`` library)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer

from .errors import CheckpointError, InputError


@dataclass
class TokenizedBatch:
    """A padded batch.

    Attributes:
        input_ids, attention_mask, token_type_ids: (B, S) int64, padded to the longest row.
        truncated: how many inputs lost tokens to ``max_length``.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    token_type_ids: torch.Tensor
    truncated: int


class TextTokenizer:
    """Tokenizes text the way sentence-transformers does: ``[CLS] text [SEP]``, truncated at
    ``max_length`` tokens (special tokens included), padded to the longest in the batch."""

    def __init__(self, tokenizer_file: str | Path, max_length: int | None = None):
        path = Path(tokenizer_file)
        if not path.is_file():
            raise CheckpointError(f"tokenizer file {path} does not exist.")
        try:
            self._tokenizer = Tokenizer.from_file(str(path))
        except Exception as err:  # the tokenizers library raises a bare Exception
            raise CheckpointError(f"tokenizer file {path} cannot be parsed ({err}).") from None
        self._tokenizer.no_padding()
        if max_length is not None:
            if max_length < 2:
                raise InputError(f"max_length must leave room for [CLS] and [SEP], got {max_length}.")
            self._tokenizer.enable_truncation(max_length)
        else:
            self._tokenizer.no_truncation()
        self.max_length = max_length
        pad_id = self._tokenizer.token_to_id("[PAD]")
        self.pad_token_id = 0 if pad_id is None else pad_id

    def token_to_id(self, token: str) -> int | None:
        return self._tokenizer.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        return self._tokenizer.id_to_token(token_id)

    @property
    def vocab_size(self) -> int:
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    @property
    def largest_id(self) -> int:
        """The largest token id (ids may have gaps, so it can exceed ``vocab_size - 1``)."""
        return max(self._tokenizer.get_vocab(with_added_tokens=True).values(), default=-1)

    def encode_ids(self, texts: list[str]) -> tuple[list[list[int]], list[list[int]], int]:
        """Token ids and type ids per text, unpadded, and the number of truncated texts."""
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise InputError(f"input {i} is a {type(text).__name__}, not a string.")
        encodings = self._tokenizer.encode_batch(texts)
        truncated = sum(1 for e in encodings if e.overflowing)
        return [e.ids for e in encodings], [e.type_ids for e in encodings], truncated

    def __call__(self, texts: list[str]) -> TokenizedBatch:
        ids, types, truncated = self.encode_ids(texts)
        return collate(ids, types, self.pad_token_id, truncated)


def collate(ids: list[list[int]], types: list[list[int]], pad_token_id: int = 0,
            truncated: int = 0) -> TokenizedBatch:
    """Right-pad token and type id lists into a (B, S) batch, S the longest row."""
    longest = max((len(row) for row in ids), default=0)
    input_ids = torch.full((len(ids), longest), pad_token_id, dtype=torch.int64)
    attention_mask = torch.zeros((len(ids), longest), dtype=torch.int64)
    token_type_ids = torch.zeros((len(ids), longest), dtype=torch.int64)
    for row, (row_ids, row_types) in enumerate(zip(ids, types)):
        input_ids[row, :len(row_ids)] = torch.tensor(row_ids, dtype=torch.int64)
        token_type_ids[row, :len(row_types)] = torch.tensor(row_types, dtype=torch.int64)
        attention_mask[row, :len(row_ids)] = 1
    return TokenizedBatch(input_ids, attention_mask, token_type_ids, truncated)
