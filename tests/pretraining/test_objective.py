"""The masked-LM loss against transformers' BertForMaskedLM on the same weights and masks."""

import pytest
import torch

from mosaic_encoder.config import MosaicConfig
from mosaic_encoder.pretraining.initialise import new_masked_lm
from mosaic_encoder.pretraining.masking import Masker, MaskingRates
from mosaic_encoder.pretraining.objective import MaskedLMObjective
from mosaic_encoder.pretraining.reference import bert_for_masked_lm


CLASSIC = MosaicConfig(vocab_size=1000, hidden_size=64, num_hidden_layers=2,
                       num_attention_heads=4, intermediate_size=128, max_position_embeddings=128,
                       position_embedding_type="absolute", feed_forward="gelu",
                       hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                       attention_impl="sdpa")


def test_loss_equals_bert_for_masked_lm():
    model = new_masked_lm(CLASSIC, seed=3).eval()
    reference = bert_for_masked_lm(model)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 1000, (6, 40), generator=generator)
    mask = torch.ones_like(ids)
    for row, length in enumerate([40, 33, 17, 40, 5, 28]):  # variable-length documents
        mask[row, length:] = 0
    ids[mask == 0] = 0
    batch = Masker(MaskingRates(), 4, [0, 1, 2, 3, 4], 1000)(ids, mask, generator)
    with torch.no_grad():
        ours = MaskedLMObjective(model).score(batch)
        labels = torch.where(batch.selected, batch.labels, torch.full_like(ids, -100))
        theirs = reference(input_ids=batch.input_ids, attention_mask=mask, labels=labels)
    assert ours.count == int(batch.selected.sum()) > 0
    assert abs(float(ours.loss) / ours.count - float(theirs.loss)) <= 1e-5
    predicted = theirs.logits.argmax(-1)[batch.selected]
    assert int(ours.correct) == int((predicted == batch.labels[batch.selected]).sum())


def test_decoder_sees_the_masked_tokens_only():
    model = new_masked_lm(CLASSIC, seed=0).eval()
    hidden = torch.randn(10, 64)
    positions = torch.tensor([1, 4, 7])
    logits = model.masked_logits(hidden, positions)
    assert logits.shape == (3, 1000)
    assert torch.allclose(logits, model.cls.predictions(hidden)[positions], atol=1e-6)
