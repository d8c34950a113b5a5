import json
import shutil

import numpy as np
import pytest
import torch

from helpers import WEIGHTS, copy_checkpoint
from mosaic_encoder import CheckpointError, InputError
from mosaic_encoder.pooling import Pooling
from mosaic_encoder.sentence import SentenceEncoder


@pytest.fixture(scope="module")
def encoder():
    return SentenceEncoder(WEIGHTS / "mosaic-tiny")


@pytest.mark.parametrize("batch_size", [1, 3, 32])
def test_sentence_embeddings_match_upstream(encoder, expected, texts, batch_size):
    ours = torch.from_numpy(encoder.encode(texts, batch_size=batch_size))
    reference = expected("mosaic-tiny")["texts.sentence_embedding"]
    assert ours.dtype == torch.float32 and ours.shape == reference.shape
    assert torch.nn.functional.cosine_similarity(ours, reference).min() >= 0.99999
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-5)


def test_input_order_and_shapes(encoder, texts):
    reversed_out = encoder.encode(texts[::-1], batch_size=2)
    np.testing.assert_allclose(reversed_out[::-1], encoder.encode(texts), atol=1e-6)
    assert encoder.encode("one text").shape == (192,)
    assert encoder.encode([]).shape == (0, 192)
    tensor = encoder.encode(texts[:2], convert_to_numpy=False)
    assert isinstance(tensor, torch.Tensor) and tensor.dtype == torch.float32


def test_token_budget_batching_equals_one_at_a_time(encoder, texts):
    together = encoder.encode(texts, max_tokens_per_batch=64)
    alone = np.stack([encoder.encode(t) for t in texts])
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_truncation_at_max_seq_length(expected, texts):
    short = SentenceEncoder(WEIGHTS / "mosaic-tiny", max_seq_length=8)
    short.encode(texts)
    lengths = expected("mosaic-tiny")["texts.attention_mask"].sum(dim=1)
    assert short.last_truncated == int((lengths > 8).sum()) > 0


def test_mlm_checkpoint_encodes_with_mean_pooling(texts):
    out = SentenceEncoder(WEIGHTS / "mosaic-tiny-mlm").encode(texts)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1, atol=1e-5)


def test_pooling_modes():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, -4.0], [0.0, 0.0]]])
    mask = torch.tensor([[1, 1, 0]])
    pooled = Pooling(("cls_token", "max_tokens", "mean_tokens", "mean_sqrt_len_tokens"))(hidden, mask)
    expected = [1, 2, 3, 2, 2, -1, 4 / 2 ** 0.5, -2 / 2 ** 0.5]
    torch.testing.assert_close(pooled[0], torch.tensor(expected))


def test_pooling_of_a_row_without_tokens_is_zero():
    hidden = torch.zeros(2, 3, 2)
    hidden[0, :2] = torch.tensor([[1.0, 2.0], [3.0, -4.0]])
    mask = torch.tensor([[1, 1, 0], [0, 0, 0]])
    pooled = Pooling(("cls_token", "max_tokens", "mean_tokens", "mean_sqrt_len_tokens"))(hidden, mask)
    assert torch.isfinite(pooled).all() and not pooled[1].any()


def test_bad_pooling_config(tmp_path):
    (tmp_path / "config.json").write_text('{"pooling_mode_weightedmean_tokens": true}')
    with pytest.raises(CheckpointError, match="unsupported mode"):
        Pooling.from_json_file(tmp_path / "config.json")


def test_a_prompt_is_refused_where_pooling_leaves_prompts_out(tmp_path, texts):
    """SentenceEncoder cannot leave a prompt's tokens out of the pooling, so it refuses the
    prompt on such a checkpoint (to_sentence_transformer implements it)."""
    directory = tmp_path / "no-prompt"
    shutil.copytree(WEIGHTS / "mosaic-tiny", directory)
    (directory / "1_Pooling" / "config.json").write_text(json.dumps(
        {"embedding_dimension": 192, "pooling_mode": "mean", "include_prompt": False}))
    encoder = SentenceEncoder(directory)
    assert encoder.encode(texts[:2]).shape == (2, 192)
    with pytest.raises(InputError, match="include_prompt false"):
        encoder.encode(texts[:2], prompt="query: ")


def test_compiled_encoder_equals_eager_and_times_its_first_batch(texts):
    """compile= goes through torch.compile (here the cheap aot_eager backend; inductor is
    tested in test_compile and by encode --compile in test_cli)."""
    eager = SentenceEncoder(WEIGHTS / "mosaic-tiny", attention="sdpa")
    compiled = SentenceEncoder(WEIGHTS / "mosaic-tiny", attention="sdpa", compile="aot_eager")
    assert compiled.first_batch_seconds is None
    np.testing.assert_allclose(compiled.encode(texts, batch_size=3), eager.encode(texts),
                               rtol=0, atol=1e-5)
    assert compiled.first_batch_seconds > 0
    assert type(compiled.model) is type(eager.model)  # the module itself, for callers


def _with_prompts(tmp_path, settings):
    directory = tmp_path / "prompts"
    shutil.copytree(WEIGHTS / "mosaic-tiny", directory)
    (directory / "config_sentence_transformers.json").write_text(json.dumps(settings))
    return directory


def test_prompt_names_come_from_the_checkpoint_settings(tmp_path, texts):
    """prompt_name picks a saved prompt (as train --query-prompt saves them); the default prompt
    name applies without arguments; an explicit prompt wins, as in sentence-transformers."""
    directory = _with_prompts(tmp_path, {"prompts": {"query": "query: ", "document": ""},
                                         "default_prompt_name": "query"})
    encoder = SentenceEncoder(directory)
    plain = SentenceEncoder(WEIGHTS / "mosaic-tiny")
    prompted = plain.encode(texts[:3], prompt="query: ")
    np.testing.assert_array_equal(encoder.encode(texts[:3], prompt_name="query"), prompted)
    np.testing.assert_array_equal(encoder.encode(texts[:3]), prompted)
    np.testing.assert_array_equal(encoder.encode(texts[:3], prompt_name="document"),
                                  plain.encode(texts[:3]))
    np.testing.assert_array_equal(encoder.encode(texts[:3], prompt="q: "),
                                  plain.encode(texts[:3], prompt="q: "))
    with pytest.raises(InputError, match="'passage' is not among this checkpoint's prompts "
                                         r"\(document, query"):
        encoder.encode(texts[:1], prompt_name="passage")


@pytest.mark.parametrize("settings, message", [
    ({"prompts": ["query: "]}, "prompts must map names to strings"),
    ({"prompts": {"query": 3}}, "prompts must map names to strings"),
    ({"prompts": {}, "default_prompt_name": "query"}, "names no prompt"),
])
def test_bad_prompt_settings_are_one_sentence(tmp_path, settings, message):
    with pytest.raises(CheckpointError, match=message):
        SentenceEncoder(_with_prompts(tmp_path, settings))


@pytest.mark.parametrize("scale", [0.0, 1e-30])
def test_all_zero_or_vanishing_weights_are_refused_not_returned_as_zero_vectors(tmp_path, scale):
    """Weights all zero (or all scaled to 1e-30) pool to a vector too short to normalise: the
    encoder refuses it rather than return zero "unit" vectors."""
    directory = copy_checkpoint(tmp_path, tensors=lambda state: state.update(
        {name: tensor * scale for name, tensor in state.items()}))
    with pytest.raises(CheckpointError, match="2 of 2 embeddings are zero vectors \\(the first "
                                              "is row 0\\): .* all-zero or vanishing"):
        SentenceEncoder(directory).encode(["one text", "another"])


def test_all_zero_weights_through_the_cli_are_one_sentence(tmp_path, capsys):
    from mosaic_encoder.cli import main

    directory = copy_checkpoint(tmp_path, tensors=lambda state: state.update(
        {name: torch.zeros_like(tensor) for name, tensor in state.items()}))
    assert main(["encode", "x", "--model", str(directory)]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert "1 of 1 embeddings are zero vectors" in captured.err
