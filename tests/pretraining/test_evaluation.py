import torch

from mosaic_encoder import load_model
from mosaic_encoder.pretraining.documents import DocumentFile
from mosaic_encoder.pretraining.evaluation import evaluate_lengths
from mosaic_encoder.tokenizer import TextTokenizer

from .conftest import write_corpus


def test_scores_do_not_depend_on_the_batch_size(tmp_path, tiny_mlm):
    held = [DocumentFile.open(write_corpus(tmp_path / "held.txt", 40))]
    model = load_model(tiny_mlm)
    tokenizer = TextTokenizer(tiny_mlm / "tokenizer.json")
    whole = evaluate_lengths(model, tokenizer, held, [32, 64], tokens=512, batch_tokens=4096)
    pieces = evaluate_lengths(model, tokenizer, held, [32, 64], tokens=512, batch_tokens=32)
    for a, b in zip(whole, pieces):
        assert (a.length, a.sequences, a.predicted) == (b.length, b.sequences, b.predicted)
        assert abs(a.loss - b.loss) < 1e-5 and a.accuracy == b.accuracy
    assert [s.sequences for s in whole] == [16, 8]  # the same 512 tokens at each length


def test_the_same_seed_gives_two_models_the_same_masks(tmp_path, tiny_mlm):
    """The count of masked tokens is the masks' fingerprint; another seed changes it."""
    held = [DocumentFile.open(write_corpus(tmp_path / "held.txt", 40))]
    tokenizer = TextTokenizer(tiny_mlm / "tokenizer.json")
    first = load_model(tiny_mlm)
    second = load_model(tiny_mlm)
    with torch.no_grad():
        for parameter in second.parameters():
            parameter.mul_(1.5)
    a = evaluate_lengths(first, tokenizer, held, [32], tokens=1024, seed=7)[0]
    b = evaluate_lengths(second, tokenizer, held, [32], tokens=1024, seed=7)[0]
    c = evaluate_lengths(first, tokenizer, held, [32], tokens=1024, seed=8)[0]
    assert a.predicted == b.predicted and a.loss != b.loss
    assert a.predicted != c.predicted


def test_too_little_held_out_text_is_a_row_not_an_error(tmp_path, tiny_mlm):
    held = tmp_path / "held.txt"
    held.write_text("just a few words\n")
    model = load_model(tiny_mlm)
    tokenizer = TextTokenizer(tiny_mlm / "tokenizer.json")
    (score,) = evaluate_lengths(model, tokenizer, [DocumentFile.open(held)], [128])
    assert score.loss is None and "shorter than 128 tokens" in score.note
