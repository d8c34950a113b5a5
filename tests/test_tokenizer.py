import pytest
import torch

from helpers import CHECKPOINTS, WEIGHTS
from mosaic_encoder import CheckpointError, InputError
from mosaic_encoder.tokenizer import TextTokenizer


@pytest.mark.parametrize("name", CHECKPOINTS)
def test_texts_tokenize_to_expected_ids(expected, texts, name):
    batch = TextTokenizer(WEIGHTS / name / "tokenizer.json", 4096)(texts)
    assert torch.equal(batch.input_ids, expected(name)["texts.input_ids"])
    assert torch.equal(batch.attention_mask, expected(name)["texts.attention_mask"])
    assert batch.truncated == 0


def test_special_tokens():
    tokenizer = TextTokenizer(WEIGHTS / "mosaic-tiny" / "tokenizer.json")
    ids = {t: tokenizer.token_to_id(t) for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")}
    assert ids == {"[PAD]": 0, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102, "[MASK]": 103}


def test_truncation_counts_and_keeps_sep():
    tokenizer = TextTokenizer(WEIGHTS / "mosaic-tiny" / "tokenizer.json", max_length=8)
    batch = tokenizer(["one two three four five six seven eight nine", "short"])
    assert batch.input_ids.shape == (2, 8) and batch.truncated == 1
    assert batch.input_ids[0, -1] == 102 and batch.input_ids[1, :3].tolist() == [101, 2460, 102]


def test_bad_inputs(tmp_path):
    tokenizer = TextTokenizer(WEIGHTS / "mosaic-tiny" / "tokenizer.json")
    with pytest.raises(InputError, match="input 1 is a int"):
        tokenizer(["fine", 3])
    with pytest.raises(CheckpointError, match="does not exist"):
        TextTokenizer(tmp_path / "tokenizer.json")
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(CheckpointError, match="cannot be parsed"):
        TextTokenizer(tmp_path / "tokenizer.json")
