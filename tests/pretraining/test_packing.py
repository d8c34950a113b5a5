import pytest

from mosaic_encoder.errors import InputError
from mosaic_encoder.pretraining.packing import SequencePacker
from mosaic_encoder.tokenizer import TextTokenizer

from .conftest import SENTENCES, TOKENIZER


@pytest.fixture(scope="module")
def tokenizer():
    return TextTokenizer(TOKENIZER / "tokenizer.json")


@pytest.mark.parametrize("length", [2, 7, 16, 128])
def test_sequences_are_cls_then_the_documents_run_on(tokenizer, length):
    packer = SequencePacker(tokenizer, length)
    sequences = list(packer(SENTENCES * 3))
    ids, _, _ = tokenizer.encode_ids(SENTENCES * 3)
    stream = [token for row in ids for token in row[1:]]  # each document, then its [SEP]
    assert all(len(s) == length and s[0] == packer.cls_id for s in sequences)
    body = [token for s in sequences for token in s[1:]]
    assert body == stream[:len(body)]
    assert len(stream) - len(body) < length - 1  # only the last partial piece is dropped


def test_too_little_text_gives_no_sequence(tokenizer):
    assert list(SequencePacker(tokenizer, 512)(["a few words"])) == []


def test_length_below_two_is_refused(tokenizer):
    with pytest.raises(InputError, match="at least 2"):
        SequencePacker(tokenizer, 1)
