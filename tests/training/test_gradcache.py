"""The gradient cache gives the gradients of plain back-propagation (fp32, <= 1e-5 relative)."""


import pytest
import torch

from mosaic_encoder.loading import load_model
from mosaic_encoder.models import unwrap_encoder
from mosaic_encoder.pooling import Pooling
from mosaic_encoder.tokenizer import TextTokenizer
from mosaic_encoder.training import gradcache
from mosaic_encoder.training.loss import in_batch_negatives_loss
from mosaic_encoder.training.model import SentenceModel, rows

from helpers import TINY, pairs


def _model(directory):
    return SentenceModel(unwrap_encoder(load_model(directory)), Pooling()).train()


def _batch(count=6):
    tokenizer = TextTokenizer(TINY / "tokenizer.json", 32)
    data = pairs(count, negatives=True)
    texts = [r["anchor"] for r in data] + [r["positive"] for r in data] + \
        [r["negative"] for r in data]
    return tokenizer(texts), count


def _loss_of(count):
    def loss_of(embeddings):
        return in_batch_negatives_loss(embeddings[:count], embeddings[count:2 * count],
                                       embeddings[2 * count:])
    return loss_of


def _gradients(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _assert_relative(actual, expected, tolerance=1e-5):
    assert actual.keys() == expected.keys()
    for name, grad in expected.items():
        difference = float((actual[name] - grad).norm())
        assert difference <= tolerance * float(grad.norm()) + 1e-12, name


@pytest.mark.parametrize("chunk_size", [1, 4, 7])
def test_equals_full_batch_gradients(tiny_no_dropout, chunk_size):
    model = _model(tiny_no_dropout)
    tokens, count = _batch()
    plain_loss = gradcache.backward(model, tokens, _loss_of(count))
    plain = _gradients(model)
    model.zero_grad()
    cached_loss = gradcache.backward(model, tokens, _loss_of(count), chunk_size=chunk_size)
    # Chunks of other lengths sum in another order: a few float32 ulps apart.
    torch.testing.assert_close(cached_loss, plain_loss, rtol=1e-6, atol=0)
    _assert_relative(_gradients(model), plain)


def test_dropout_masks_are_replayed():
    """With dropout on, the cache's gradients are those of the chunk-by-chunk forward pass with
    the same random stream, and the stream ends where that pass leaves it."""
    model = _model(TINY)
    tokens, count = _batch()
    torch.manual_seed(5)
    chunks = [rows(tokens, start, min(start + 4, 3 * count)) for start in range(0, 3 * count, 4)]
    embeddings = torch.cat([model(c.input_ids, c.attention_mask, c.token_type_ids)
                            for c in chunks])
    _loss_of(count)(embeddings).backward()
    expected, state = _gradients(model), torch.get_rng_state()
    model.zero_grad()
    torch.manual_seed(5)
    gradcache.backward(model, tokens, _loss_of(count), chunk_size=4)
    _assert_relative(_gradients(model), expected)
    assert torch.equal(torch.get_rng_state(), state)
    model.zero_grad()
    torch.manual_seed(6)  # another stream gives other masks: the test can tell them apart
    gradcache.backward(model, tokens, _loss_of(count), chunk_size=4)
    with pytest.raises(AssertionError):
        _assert_relative(_gradients(model), expected)
