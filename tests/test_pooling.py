"""Sentence-transformers pooling, and the pooling config that chooses it."""

import json

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from mosaic_encoder import CheckpointError
from mosaic_encoder.pooling import Pooling

HIDDEN = torch.tensor([[[1.0, 2.0], [3.0, -4.0], [0.0, 0.0]],
                       [[-1.0, 5.0], [0.0, 0.0], [0.0, 0.0]]])
MASK = torch.tensor([[1, 1, 0], [1, 0, 0]])


def test_each_mode_by_hand():
    assert torch.equal(Pooling(("cls_token",))(HIDDEN, MASK), HIDDEN[:, 0])
    assert torch.equal(Pooling(("max_tokens",))(HIDDEN, MASK),
                       torch.tensor([[3.0, 2.0], [-1.0, 5.0]]))
    assert torch.equal(Pooling(("mean_tokens",))(HIDDEN, MASK),
                       torch.tensor([[2.0, -1.0], [-1.0, 5.0]]))
    torch.testing.assert_close(Pooling(("mean_sqrt_len_tokens",))(HIDDEN, MASK),
                               torch.tensor([[4.0, -2.0], [-1.0, 5.0]]) / torch.tensor(
                                   [[2.0 ** 0.5], [1.0]]))


def test_modes_concatenate_in_sentence_transformers_order():
    pooled = Pooling(("cls_token", "mean_tokens"))(HIDDEN, MASK)
    assert pooled.shape == (2, 4)
    assert torch.equal(pooled[:, :2], HIDDEN[:, 0])


@given(st.integers(1, 6), st.integers(0, 4), st.integers(0, 2**16))
def test_padding_does_not_change_the_pooled_vector(length, extra, seed):
    """Padded positions (zeros, mask 0) never enter any mode."""
    real = torch.randn(1, length, 3, generator=torch.Generator().manual_seed(seed))
    padded = torch.cat([real, torch.zeros(1, extra, 3)], dim=1)
    mask = torch.cat([torch.ones(1, length), torch.zeros(1, extra)], dim=1).long()
    pooling = Pooling(("cls_token", "max_tokens", "mean_tokens", "mean_sqrt_len_tokens"))
    torch.testing.assert_close(pooling(padded, mask), pooling(real, torch.ones(1, length).long()))


def write(tmp_path, value) -> object:
    path = tmp_path / "config.json"
    path.write_text(value if isinstance(value, str) else json.dumps(value))
    return path


def test_config_file_chooses_the_modes(tmp_path):
    path = write(tmp_path, {"word_embedding_dimension": 768, "pooling_mode_cls_token": False,
                            "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": True})
    assert Pooling.from_json_file(path).modes == ("max_tokens", "mean_tokens")


@pytest.mark.parametrize("value,modes", [
    ("mean", ("mean_tokens",)),
    (["cls"], ("cls_token",)),
    (["mean", "cls", "max", "mean_sqrt_len_tokens"],
     ("mean_tokens", "cls_token", "max_tokens", "mean_sqrt_len_tokens")),
])
def test_sentence_transformers_6_format_keeps_its_order(tmp_path, value, modes):
    """sentence-transformers 6 writes one ``pooling_mode`` key and concatenates in its order."""
    path = write(tmp_path, {"embedding_dimension": 192, "pooling_mode": value,
                            "include_prompt": True})
    assert Pooling.from_json_file(path).modes == modes


@pytest.mark.parametrize("content,message", [
    ([True], "must hold a JSON object, got an array"),
    ({"pooling_mode": "lasttoken"}, "unsupported mode.*lasttoken"),
    ({"pooling_mode": []}, "pooling_mode must be a mode name or a non-empty list"),
    ({"pooling_mode": [1]}, "pooling_mode must be a mode name or a non-empty list"),
    ({"pooling_mode": None}, "pooling_mode must be a mode name"),
    (None, "must hold a JSON object, got null"),
    ({"pooling_mode_mean_tokens": "yes"}, "pooling_mode_mean_tokens must be true or false"),
    ({"pooling_mode_mean_tokens": None}, "must be true or false"),
    ({"pooling_mode_weightedmean_tokens": True}, "unsupported mode"),
    ({"pooling_mode_mean_tokens": False}, "enables no pooling mode"),
    ("[" * 5000 + "]" * 5000, "nests JSON values too deeply"),
    ('{"pooling_mode_mean_tokens": ' + "1" * 5000 + "}", "number too large"),
])
def test_malformed_config_is_one_sentence(tmp_path, content, message):
    with pytest.raises(CheckpointError, match=message):
        Pooling.from_json_file(write(tmp_path, content))


def test_include_prompt_is_read_and_checked(tmp_path):
    assert Pooling.from_json_file(write(tmp_path, {"pooling_mode": "mean"})).include_prompt
    path = write(tmp_path, {"pooling_mode": "cls", "include_prompt": False})
    assert Pooling.from_json_file(path) == Pooling(("cls_token",), include_prompt=False)
    with pytest.raises(CheckpointError, match="include_prompt must be true or false"):
        Pooling.from_json_file(write(tmp_path, {"pooling_mode_mean_tokens": True,
                                                "include_prompt": "no"}))
