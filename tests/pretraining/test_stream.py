from collections import Counter

import pytest
import torch

from mosaic_encoder.errors import InputError
from mosaic_encoder.pretraining.documents import DocumentFile
from mosaic_encoder.pretraining.packing import SequencePacker
from mosaic_encoder.pretraining.stream import Batches, SequenceStream
from mosaic_encoder.tokenizer import TextTokenizer

from .conftest import TOKENIZER, write_corpus


@pytest.fixture(scope="module")
def packer():
    return SequencePacker(TextTokenizer(TOKENIZER / "tokenizer.json"), 16)


def stream_of(files, packer, seed=0, window=8):
    return SequenceStream([DocumentFile.open(f) for f in files], packer, seed, window)


def test_order_is_a_function_of_the_seed(tmp_path, packer):
    files = [write_corpus(tmp_path / "a.txt", 40), write_corpus(tmp_path / "b.txt", 20, seed=3)]
    first = list(stream_of(files, packer, seed=1).epoch(0))
    assert first == list(stream_of(files, packer, seed=1).epoch(0))
    assert first != list(stream_of(files, packer, seed=2).epoch(0))
    assert first != list(stream_of(files, packer, seed=1).epoch(1))
    # An epoch is a permutation of every file's sequences.
    alone = [list(packer(DocumentFile.open(f))) for f in files]
    assert sorted(first) == sorted(alone[0] + alone[1])


def test_files_are_drawn_in_proportion_to_their_size(tmp_path, packer):
    big = write_corpus(tmp_path / "big.txt", 300)
    small = tmp_path / "small.txt"  # words the other file never uses: origins stay apart
    small.write_text("".join(f"number {i} counts seven eight nine ten\n" for i in range(100)))
    big_ids = {t for seq in packer(DocumentFile.open(big)) for t in seq}
    first_half = list(stream_of([big, small], packer, window=1).epoch(0))
    first_half = first_half[:len(first_half) // 2]
    counts = Counter("big" if set(seq) <= big_ids else "small" for seq in first_half)
    share = counts["big"] / len(first_half)
    size_share = big.stat().st_size / (big.stat().st_size + small.stat().st_size)
    assert abs(share - size_share) < 0.1


def test_batches_in_any_order_equal_batches_in_sequence(tmp_path, packer):
    files = [write_corpus(tmp_path / "a.txt", 40)]
    sequential = Batches(stream_of(files, packer), 4)
    in_order = [sequential.batch(step) for step in range(12)]  # crosses an epoch
    jumping = Batches(stream_of(files, packer), 4)
    for step in (7, 3, 11, 0):
        assert torch.equal(jumping.batch(step), in_order[step])
    assert in_order[0].shape == (4, 16)


def test_a_corpus_shorter_than_one_sequence_is_refused(tmp_path, packer):
    short = tmp_path / "short.txt"
    short.write_text("hello\n", encoding="utf-8")
    with pytest.raises(InputError, match="fewer than 16 tokens"):
        stream_of([short], packer).check()
