"""Wrong types at the Python API's entry points are one-sentence MosaicErrors, never a TypeError
or AttributeError from deep inside."""

from pathlib import Path

import numpy as np
import pytest
import torch

import mosaic_encoder as me
from helpers import WEIGHTS
from mosaic_encoder.api_arguments import flag_arg, int_arg, path_arg, text_list
from mosaic_encoder.convert import convert_checkpoint
from mosaic_encoder.errors import ArgumentError, InputError, MosaicError
from mosaic_encoder.fill_mask import fill_mask, masked_token_ids
from mosaic_encoder.tokenizer import TextTokenizer
from mosaic_encoder.verify import file_digests, verify_checkpoint

TINY, MLM = WEIGHTS / "mosaic-tiny", WEIGHTS / "mosaic-tiny-mlm"


@pytest.fixture(scope="module")
def loaded():
    return {"encoder": me.SentenceEncoder(TINY), "mlm": me.load_model(MLM),
            "tokenizer": TextTokenizer(MLM / "tokenizer.json")}


# Each call as a hostile (or careless) caller makes it, and the start of its one sentence.
WRONG_CALLS = {
    "SentenceEncoder(int)": (lambda _: me.SentenceEncoder(3),
                             "checkpoint path must be a str or pathlib.Path, got int 3."),
    "SentenceEncoder(bytes)": (lambda _: me.SentenceEncoder(bytes(TINY)),
                               "checkpoint path must be a str or pathlib.Path, got bytes"),
    "encode(dict)": (lambda x: x["encoder"].encode({"a": 1}),
                     "sentences must be a list of strings, got dict."),
    "encode(None)": (lambda x: x["encoder"].encode(None),
                     "sentences must be a list of strings, got NoneType."),
    "encode(batch_size str)": (lambda x: x["encoder"].encode(["a"], batch_size="2"),
                               "batch_size must be an integer, got str '2'."),
    "encode(batch_size bool)": (lambda x: x["encoder"].encode(["a"], batch_size=True),
                                "batch_size must be an integer, got bool True."),
    "encode(max_tokens_per_batch float)": (
        lambda x: x["encoder"].encode(["a"], max_tokens_per_batch=2.5),
        "max_tokens_per_batch must be an integer, got float 2.5."),
    "encode(prompt int)": (lambda x: x["encoder"].encode(["a"], prompt=3),
                           "prompt must be a string, got int 3."),
    "encode(normalize_embeddings str)": (
        lambda x: x["encoder"].encode(["a"], normalize_embeddings="no"),
        "normalize_embeddings must be True or False, got str 'no'."),
    "similarity(str)": (lambda x: x["encoder"].similarity("a", "b"),
                        "similarity needs embeddings as a numpy array or torch tensor, got str"),
    "similarity(lengths)": (lambda x: x["encoder"].similarity(np.ones((2, 3)), np.ones(4)),
                            "similarity needs embeddings of one length, got 3 and 4."),
    "load_model(None)": (lambda _: me.load_model(None),
                         "checkpoint path must be a str or pathlib.Path, got NoneType."),
    "load_model(attention_window str)": (lambda _: me.load_model(TINY, attention_window="no"),
                                         "attention_window must be True or False"),
    "verify_checkpoint(int)": (lambda _: verify_checkpoint(3), "checkpoint path must be a str or"),
    "verify_checkpoint(golden int)": (lambda _: verify_checkpoint(TINY, golden=3),
                                      "golden must be a str or pathlib.Path, got int 3."),
    "file_digests(list)": (lambda _: file_digests([TINY]), "checkpoint path must be a str or"),
    "convert_checkpoint(int)": (lambda _: convert_checkpoint(7), "source must be a str or"),
    "fill_mask(str)": (lambda x: fill_mask(x["mlm"], x["tokenizer"], "a [MASK]"),
                       "texts must be a list of strings, got a single string"),
    "fill_mask(dict)": (lambda x: fill_mask(x["mlm"], x["tokenizer"], {"a [MASK]": 1}),
                        "texts must be a list of strings, got dict."),
    "fill_mask(top_k float)": (lambda x: fill_mask(x["mlm"], x["tokenizer"], ["[MASK]"], 2.5),
                               "top_k must be an integer, got float 2.5."),
    "fill_mask(batch_size str)": (lambda x: fill_mask(x["mlm"], x["tokenizer"], ["[MASK]"],
                                                      batch_size="8"),
                                  "batch_size must be an integer, got str '8'."),
    "fill_mask(tokenizer path)": (lambda x: fill_mask(x["mlm"], MLM / "tokenizer.json", ["[MASK]"]),
                                  "fill_mask needs a TextTokenizer, got PosixPath."),
    "masked_token_ids(int)": (lambda x: masked_token_ids(x["tokenizer"], 3),
                              "texts must be a list of strings, got int 3."),
    "TextTokenizer(max_length str)": (lambda _: TextTokenizer(MLM / "tokenizer.json", "8"),
                                      "max_length must be an integer, got str '8'."),
    "TextTokenizer call(str)": (lambda x: x["tokenizer"]("a text"),
                                "texts must be a list of strings, got a single string"),
    "to_sentence_transformer(int)": (lambda _: me.to_sentence_transformer(3),
                                     "checkpoint path must be a str or pathlib.Path, got int 3."),
    "to_sentence_transformer(device float)": (lambda _: me.to_sentence_transformer(TINY,
                                                                                   device=1.5),
                                              "device must be a device name"),
}


@pytest.mark.parametrize("case", list(WRONG_CALLS))
def test_a_wrong_type_is_one_sentence(loaded, case):
    call, message = WRONG_CALLS[case]
    with pytest.raises(MosaicError) as caught:
        call(loaded)
    text = str(caught.value)
    assert text.startswith(message) and text.endswith(".") and "\n" not in text


def test_argument_errors_are_type_errors_too():
    """Callers that catch TypeError (or InputError, or ValueError) still do."""
    with pytest.raises(TypeError):
        int_arg("3", "count")
    assert issubclass(ArgumentError, InputError) and issubclass(ArgumentError, ValueError)


def test_what_is_accepted():
    assert path_arg(TINY, "p") == TINY and path_arg(str(TINY), "p") == TINY
    assert int_arg(np.int64(3), "n") == 3 and type(int_arg(np.int64(3), "n")) is int
    assert int_arg(0, "n", low=0) == 0
    with pytest.raises(InputError, match="n must be at least 1, got 0."):
        int_arg(0, "n")
    assert flag_arg(np.bool_(True), "f") is True and flag_arg(False, "f") is False
    for texts in (("a", "b"), ["a", "b"], (t for t in "ab"), np.array(["a", "b"])):
        assert text_list(texts, "texts") == ["a", "b"]
    for wrong in ({"a", "b"}, b"ab", bytearray(b"ab"), 3):
        with pytest.raises(ArgumentError, match="texts must be a list of strings"):
            text_list(wrong, "texts")


def test_a_long_wrong_value_is_cut():
    with pytest.raises(ArgumentError) as caught:
        path_arg(b"x" * 10_000, "path")
    assert len(str(caught.value)) < 120


def test_the_api_still_takes_what_it_took(loaded):
    """Tuples, numpy integers and pathlib paths keep working."""
    embeddings = loaded["encoder"].encode(("one", "two"), batch_size=np.int32(1))
    assert embeddings.shape == (2, 192)
    similarity = loaded["encoder"].similarity(embeddings, torch.from_numpy(embeddings[0]))
    assert similarity.shape == (2, 1)
    [result] = fill_mask(loaded["mlm"], loaded["tokenizer"], ("a [MASK]",), top_k=np.int64(2))
    assert len(result.masks[0].predictions) == 2
    assert me.load_model(Path(TINY), attention_window=np.bool_(False)).config.hidden_size == 192
