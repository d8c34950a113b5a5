"""Fill-mask as a library function: the masked-LM head runs on [MASK] rows only."""

import pytest
import torch

import mosaic_encoder as me
from helpers import WEIGHTS, copy_checkpoint
from mosaic_encoder import InputError
from mosaic_encoder.errors import NonFiniteError
from mosaic_encoder.fill_mask import MASK_ROWS_PER_PASS, fill_mask
from mosaic_encoder.tokenizer import TextTokenizer

MLM = WEIGHTS / "mosaic-tiny-mlm"
TEXTS = ["The capital of France is [MASK].", "a [MASK] and a [MASK] here", "[MASK]"]


@pytest.fixture(scope="module")
def model():
    return me.load_model(MLM)


@pytest.fixture(scope="module")
def tokenizer():
    return TextTokenizer(MLM / "tokenizer.json")


def test_predictions_equal_the_full_logits(model, tokenizer):
    """Same tokens and probabilities as the softmax of the full (B, S, V) logits, top-k over the
    tokenizer's entries only."""
    results = fill_mask(model, tokenizer, TEXTS, top_k=3, batch_size=2)
    mask_id, known = tokenizer.token_to_id("[MASK]"), tokenizer.vocab_size
    assert known < model.config.vocab_size  # padding rows exist and must not be predicted
    assert [r.text for r in results] == TEXTS
    for text, result in zip(TEXTS, results):
        ids, _, _ = tokenizer.encode_ids([text])
        with torch.inference_mode():
            logits = model(torch.tensor(ids)).logits[0]
        positions = [p for p, t in enumerate(ids[0]) if t == mask_id]
        assert [m.position for m in result.masks] == positions
        for mask in result.masks:
            top = torch.topk(torch.softmax(logits[mask.position], dim=-1)[:known], 3)
            assert [p.id for p in mask.predictions] == top.indices.tolist()
            assert [p.token for p in mask.predictions] == [tokenizer.id_to_token(i)
                                                           for i in top.indices.tolist()]
            torch.testing.assert_close(torch.tensor([p.probability for p in mask.predictions]),
                                       top.values, rtol=0, atol=1e-6)


def test_the_head_sees_only_the_mask_rows(model, tokenizer):
    """A long text with two masks sends two rows, not every token, through the head."""
    seen = []
    hook = model.cls.predictions.register_forward_hook(
        lambda module, args, output: seen.append((tuple(args[0].shape), tuple(output.shape))))
    try:
        fill_mask(model, tokenizer, ["word " * 300 + "[MASK] end [MASK]"], top_k=1)
    finally:
        hook.remove()
    assert seen == [((2, model.config.hidden_size), (2, model.config.vocab_size))]


def test_as_dict_is_the_cli_json(model, tokenizer):
    [result] = fill_mask(model, tokenizer, ["a [MASK]"], top_k=2)
    values = result.as_dict()
    assert values["text"] == "a [MASK]" and values["masks"][0]["position"] == 2
    assert set(values["masks"][0]["predictions"][0]) == {"token", "id", "probability"}


def test_bad_requests(model, tokenizer):
    with pytest.raises(InputError, match=r"text 2 \('no mask'\) has no \[MASK\] token"):
        fill_mask(model, tokenizer, ["[MASK]", "no mask"])
    with pytest.raises(InputError, match="needs a masked-LM model"):
        fill_mask(model.bert, tokenizer, ["[MASK]"])
    with pytest.raises(InputError, match="top_k must be at least 1, got 0"):
        fill_mask(model, tokenizer, ["[MASK]"], top_k=0)


def test_many_masks_go_through_the_head_a_bounded_number_at_a_time(model, tokenizer):
    """More masks than one pass holds, split across texts of one batch: each pass of the head
    sees at most MASK_ROWS_PER_PASS rows, and the predictions are those of the full logits."""
    texts = ["a [MASK] b", "[MASK] " * (MASK_ROWS_PER_PASS + 44), "c [MASK] d [MASK]"]
    rows = []
    hook = model.cls.predictions.register_forward_hook(
        lambda module, args, output: rows.append(args[0].shape[0]))
    try:
        results = fill_mask(model, tokenizer, texts, top_k=2, batch_size=3)
    finally:
        hook.remove()
    assert sum(rows) == MASK_ROWS_PER_PASS + 47 and max(rows) == MASK_ROWS_PER_PASS
    known = tokenizer.vocab_size
    for text, result in zip(texts, results):
        ids, _, _ = tokenizer.encode_ids([text])
        with torch.inference_mode():
            logits = model(torch.tensor(ids)).logits[0]
        assert len(result.masks) == text.count("[MASK]")
        for mask in result.masks:
            top = torch.topk(torch.softmax(logits[mask.position], dim=-1)[:known], 2)
            assert [p.id for p in mask.predictions] == top.indices.tolist()
            torch.testing.assert_close(torch.tensor([p.probability for p in mask.predictions]),
                                       top.values, rtol=0, atol=1e-6)


def test_non_finite_scores_are_refused(tmp_path, tokenizer):
    """Finite weights whose activations overflow float32 give NaN scores: an error naming the
    first such mask, never a NaN probability."""
    def overflow(state):
        weight = state["bert.embeddings.LayerNorm.weight"]
        state["bert.embeddings.LayerNorm.weight"] = torch.full_like(weight, 1e38)

    model = me.load_model(copy_checkpoint(tmp_path, "mosaic-tiny-mlm", tensors=overflow))
    with pytest.raises(NonFiniteError, match=r"the \[MASK\] at token 3 of text 1 are not finite "
                                             r"\(NaN or Inf in float32\)"):
        fill_mask(model, tokenizer, ["x y [MASK]", "[MASK]"])
