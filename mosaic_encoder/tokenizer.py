"""WordPiece tokenization through the checkpoint's ``tokenizer.json`` (``tokenizers`` library).

Three defences against a hostile ``tokenizer.json``:

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
- What the normaliser makes of the text handed to it is bounded too: its growth per character
  is read from its configuration (:func:`normalizer_growth`), and no text longer than
  :data:`MAX_NORMALIZED_CHARS` divided by it reaches the library. A text whose tokens are not
  settled within that many characters is one sentence. Without it, a ``Replace`` of one
  character by 100,000 makes a 4,096-character prefix cost 4.7 GB: the allocator aborts the
  process (exit 134), and its message goes to the held stderr and is lost.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import struct
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
# Characters of one normalised text, at most: the library keeps offsets per byte of it, about 33
# bytes per character measured, 140 MB at this size. BERT's normaliser (growth 3) lets untruncated
# texts of 1.4 million characters through, and truncated ones any length.
MAX_NORMALIZED_CHARS = 1 << 22
# Growth per character of each normaliser that has no settings that change it, measured by
# normalising every Unicode character alone (BertNormalizer with every option on; NFKC turns
# U+FDFA into 18 characters). A Sequence multiplies its parts' growths.
_GROWTH = {"BertNormalizer": 3, "NFC": 3, "NFD": 4, "NFKC": 18, "NFKD": 18, "Lowercase": 2,
           "ByteLevel": 4, "Nmt": 1, "Strip": 1, "StripAccents": 1}


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
        self.growth = _growth(self._tokenizer, path)
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
        if self.max_length is None:
            longest = max(range(len(texts)), key=lambda i: len(texts[i]), default=None)
            if longest is not None and len(texts[longest]) > self._budget:
                raise InputError(f"input {longest} has {len(texts[longest]):,} characters, which "
                                 f"the normaliser of {self.path} may grow past "
                                 f"{MAX_NORMALIZED_CHARS:,}; split it, or truncate it (a "
                                 f"max_seq_length).")
        with native_stderr_held():
            if self.max_length is None:
                encoded = [(e.ids, e.type_ids, False) for e in self._encode_batch(texts)]
            else:
                encoded = [self._encode_bounded(i, text) for i, text in enumerate(texts)]
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

    @property
    def _budget(self) -> int:
        """The longest text the normaliser may grow to at most :data:`MAX_NORMALIZED_CHARS`."""
        factor, added = self.growth
        return max(0, MAX_NORMALIZED_CHARS - added) // factor

    def _encode_bounded(self, index: int, text: str) -> tuple[list[int], list[int], bool]:
        """Ids, type ids and whether truncation cut ``text`` (input ``index``), from as short a
        prefix as gives the same tokens as the whole text."""
        cap = MAX_CHARS_PER_TOKEN * self.max_length
        length = self.max_length
        while True:
            prefix = text[:min(length, cap, self._budget)]
            encoding = self._encode_batch([prefix])[0]
            cut = bool(encoding.overflowing)
            if len(prefix) == len(text):
                return encoding.ids, encoding.type_ids, cut
            if cut and _kept_tokens_are_final(encoding, len(prefix), self._longest_added) or \
                    len(prefix) == cap:
                return encoding.ids, encoding.type_ids, True
            if len(prefix) == self._budget:
                raise InputError(f"input {index}: the normaliser of {self.path} may grow its "
                                 f"first {len(prefix):,} characters past "
                                 f"{MAX_NORMALIZED_CHARS:,} before they give {self.max_length} "
                                 f"tokens; this tokenizer cannot take such a text.")
            length *= 2

    def __call__(self, texts: list[str]) -> TokenizedBatch:
        ids, types, truncated = self.encode_ids(texts)
        return collate(ids, types, self.pad_token_id, truncated)


def normalizer_growth(spec: dict | None) -> tuple[int, int]:
    """(factor, added): a normaliser configured by ``spec`` (its JSON in ``tokenizer.json``)
    turns n characters into at most ``factor * n + added``.

    Raises:
        ValueError: a normaliser type this bound does not know, or a malformed setting.
    """
    if spec is None:
        return 1, 0
    kind = spec.get("type")
    if kind in _GROWTH:
        return _GROWTH[kind], 0
    if kind == "Sequence":
        factor, added = 1, 0
        for part in spec["normalizers"]:
            part_factor, part_added = normalizer_growth(part)
            factor, added = factor * part_factor, added * part_factor + part_added
        return factor, added
    if kind == "Replace":  # a pattern that can match between characters inserts content there
        return len(spec["content"]) + 1, len(spec["content"])
    if kind == "Prepend":  # once, in front
        return 1, len(spec["prepend"])
    if kind == "Precompiled":  # SentencePiece's map: a trie, then the replacements, NUL-separated
        blob = base64.b64decode(spec["precompiled_charsmap"], validate=True)
        (trie_bytes,) = struct.unpack_from("<I", blob)
        replacements = blob[4 + trie_bytes:].split(b"\0")
        return max(1, *(len(r.decode("utf-8", "replace")) for r in replacements)), 0
    raise ValueError(f"normaliser type {str(kind)[:40]!r}")


def _growth(tokenizer: Tokenizer, path: Path) -> tuple[int, int]:
    """:func:`normalizer_growth` of ``tokenizer``'s normaliser, one sentence when it has none."""
    spec = tokenizer.normalizer.__getstate__() if tokenizer.normalizer is not None else b"null"
    try:
        return normalizer_growth(json.loads(spec))
    except (ValueError, KeyError, TypeError, AttributeError, struct.error, binascii.Error) as err:
        raise CheckpointError(f"tokenizer file {path} has a normaliser whose output cannot be "
                              f"bounded ({_first_line(err)}).") from None


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
