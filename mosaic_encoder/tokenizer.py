"""WordPiece tokenization through the checkpoint's ``tokenizer.json`` (``tokenizers`` library).

Two defences against a hostile ``tokenizer.json``:

- The Rust tokenizer reports some failures (a regex that backtracks catastrophically, for
  instance) by panicking; pyo3 turns the panic into ``PanicException``, a ``BaseException`` that
  ``except Exception`` misses. Every call into the library converts it into a :class:`MosaicError`.
  Rust's panic hook also writes the panic (and, under ``RUST_BACKTRACE=1``, a backtrace of 50
  lines) straight to file descriptor 2, above that one sentence; :func:`native_stderr_held`
  keeps what the library writes there and drops it when the call failed.
- With truncation at ``max_length`` tokens, only a prefix of each text is handed to the library
  (see :meth:`TextTokenizer.encode_ids`), so the work per text is bounded by ``max_length`` rather
  than by the text's length: a normaliser that turns each character into 10,000 would otherwise
  make a long text cost gigabytes.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer

from .api_arguments import optional_int_arg, path_arg, text_list
from .errors import CheckpointError, InputError, MosaicError

MAX_LENGTH = 2 ** 31 - 1  # packed token offsets (cu_seqlens) are int32
# Longest prefix, in characters per token of max_length, ever handed to the tokenizer.
MAX_CHARS_PER_TOKEN = 128


class TokenizerError(MosaicError):
    """The tokenizer library failed (panicked) on a ``tokenizer.json`` or on an input."""


# File descriptor 2 is one per process: redirections by two threads at once would restore each
# other's temporary file. Re-entrant, so that a held block may call another.
_STDERR_HOLD = threading.RLock()


@contextmanager
def native_stderr_held() -> Iterator[None]:
    """Run the block with file descriptor 2 pointing at a temporary file.

    What native code (the Rust tokenizer's panic hook) or anything else writes to descriptor 2
    meanwhile is written to the real stderr afterwards, or dropped when the block raises a
    :class:`MosaicError`: the error's own sentence then says what failed. Blocks of different
    threads run one at a time. With descriptor 2 closed there is nothing to protect.
    """
    with _STDERR_HOLD:
        try:
            sys.stderr.flush()  # Python's earlier writes go to the real stderr, in order
        except (AttributeError, OSError, ValueError):
            pass  # sys.stderr is None or closed
        try:
            saved = os.dup(2)
        except OSError:
            yield
            return
        failed = False
        try:
            with tempfile.TemporaryFile() as held:
                os.dup2(held.fileno(), 2)
                try:
                    yield
                except MosaicError:
                    failed = True
                    raise
                finally:
                    os.dup2(saved, 2)
                    if not failed:
                        held.seek(0)
                        _write_all(2, held.read())
        finally:
            os.close(saved)


def _write_all(fd: int, data: bytes) -> None:
    try:
        while data:
            data = data[os.write(fd, data):]
    except OSError:
        pass  # the real stderr is gone (a closed pipe): what was held has nowhere to go


def _is_panic(err: BaseException) -> bool:
    # pyo3_runtime.PanicException cannot be imported by name; it derives from BaseException only.
    return type(err).__name__ == "PanicException"


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
    ``max_length`` tokens (special tokens included), padded to the longest in the batch.

    ``lower_case`` lower-cases every text first, as sentence-transformers does for a checkpoint
    whose ``sentence_bert_config.json`` sets ``do_lower_case`` (the only place this package does).
    """

    def __init__(self, tokenizer_file: str | Path, max_length: int | None = None,
                 lower_case: bool = False):
        path = path_arg(tokenizer_file, "tokenizer_file")
        max_length = optional_int_arg(max_length, "max_length", low=2)
        if not path.is_file():
            raise CheckpointError(f"tokenizer file {path} does not exist.")
        self.path = path
        with native_stderr_held():
            try:
                self._tokenizer = Tokenizer.from_file(str(path))
            except BaseException as err:  # a bare Exception, or a Rust panic
                if not isinstance(err, Exception) and not _is_panic(err):
                    raise
                raise CheckpointError(f"tokenizer file {path} cannot be parsed "
                                      f"({_first_line(err)}).") from None
        self._tokenizer.no_padding()
        if max_length is not None:
            if not 2 <= max_length <= MAX_LENGTH:
                raise InputError(f"max_length must lie in [2, {MAX_LENGTH}] (room for [CLS] and "
                                 f"[SEP]; token offsets are int32), got {max_length}.")
            self._tokenizer.enable_truncation(max_length)
        else:
            self._tokenizer.no_truncation()
        self.max_length = max_length
        self.lower_case = lower_case
        self._longest_added = max((len(token.content) for token in
                                   self._tokenizer.get_added_tokens_decoder().values()), default=1)
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
        """Token ids and type ids per text, unpadded, and the number of truncated texts.

        With ``max_length`` set, each text reaches the tokenizer as a prefix of at most
        ``MAX_CHARS_PER_TOKEN * max_length`` characters, first ``max_length`` characters and then
        twice as many until the prefix is known to give the same truncated tokens as the whole
        text. That holds once the last kept word ends at least as many characters before the cut
        as the longest added token (``[MASK]``: 6) has: BERT's normaliser acts on each character
        and its pre-tokenizer splits words at whitespace and punctuation, so text up to a word
        end tokenizes alike whatever follows, unless an added token that the cut splits starts
        before it. Every word spans at least one character, so ordinary prose (under 6
        characters per token) stops at the first or second doubling; only a text averaging more
        than ``MAX_CHARS_PER_TOKEN`` characters per token over its first ``max_length`` tokens
        (a megabyte of whitespace between two words, or words over 100 characters, each one
        [UNK]) is cut at the cap.
        """
        texts = text_list(texts, "texts")
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise InputError(f"input {i} is a {type(text).__name__}, not a string.")
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as err:
                raise InputError(f"input {i} is not valid Unicode text (a lone surrogate "
                                 f"U+{ord(text[err.start]):04X} at character {err.start}).") \
                    from None
        if self.lower_case:
            texts = [text.lower() for text in texts]
        with native_stderr_held():
            if self.max_length is None:
                encoded = [(e.ids, e.type_ids, False) for e in self._encode_batch(texts)]
            else:
                encoded = [self._encode_bounded(text) for text in texts]
        return ([ids for ids, _, _ in encoded], [types for _, types, _ in encoded],
                sum(cut for _, _, cut in encoded))

    def _encode_batch(self, texts: list[str]):
        try:
            return self._tokenizer.encode_batch(texts)
        except BaseException as err:
            if not isinstance(err, Exception) and not _is_panic(err):
                raise
            raise TokenizerError(f"tokenizer file {self.path} failed on the input "
                                 f"({_first_line(err)}).") from None

    def _encode_bounded(self, text: str) -> tuple[list[int], list[int], bool]:
        """Ids, type ids and whether truncation cut ``text``, from as short a prefix as gives the
        same tokens as the whole text."""
        cap = MAX_CHARS_PER_TOKEN * self.max_length
        length = self.max_length
        while True:
            prefix = text[:min(length, cap)]
            encoding = self._encode_batch([prefix])[0]
            cut = bool(encoding.overflowing)
            if len(prefix) == len(text):
                return encoding.ids, encoding.type_ids, cut
            if len(prefix) == cap or (cut and _kept_tokens_are_final(encoding, len(prefix),
                                                                    self._longest_added)):
                return encoding.ids, encoding.type_ids, True
            length *= 2

    def __call__(self, texts: list[str]) -> TokenizedBatch:
        ids, types, truncated = self.encode_ids(texts)
        return collate(ids, types, self.pad_token_id, truncated)


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0][:200] if lines else type(err).__name__


def _kept_tokens_are_final(encoding, prefix_length: int, longest_added: int) -> bool:
    """Whether the whole text would keep the same tokens as this truncated encoding of a prefix.

    True when the last kept word ends at least ``longest_added`` characters before the cut: the
    characters up to its end then tokenize alike in the prefix and in the whole text (every
    word ending there is complete, and no added token such as ``[MASK]`` that the cut splits
    can start that early). With no kept word at all, any token past the prefix is cut anyway.
    """
    tokens = [(w, end) for e in (encoding, *encoding.overflowing)
              for w, (_, end) in zip(e.word_ids, e.offsets) if w is not None]
    kept = [w for w in encoding.word_ids if w is not None]
    if not kept:
        return True
    last_end = max(end for w, end in tokens if w == kept[-1])
    return last_end + longest_added <= prefix_length


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
