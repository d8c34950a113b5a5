"""The passkey task: deterministic per seed, one key per document at its depth, exact lengths."""

import pytest

from mosaic_encoder.errors import InputError
from mosaic_encoder.longembed.passkey import FILLER, passkey_task


def test_the_same_seed_gives_the_same_task_whatever_else_is_asked(counter):
    first = passkey_task(counter, 512, seed=3)
    passkey_task(counter, 256, seed=3)  # another length in between changes nothing
    assert passkey_task(counter, 512, seed=3) == first
    assert passkey_task(counter, 512, seed=4).queries != first.queries


def test_fifty_queries_against_a_hundred_documents(counter):
    task = passkey_task(counter, 256, seed=0)
    assert (task.name, task.length, len(task.queries), len(task.documents)) == \
        ("passkey", 256, 50, 100)
    names = [q.removeprefix("What is the pass key for ").removesuffix("?") for q in task.queries]
    for name, document in zip(names, task.documents):
        assert f"pass key for {name}." in document.text


@pytest.mark.parametrize("length", [128, 1000, 4096])
def test_each_document_holds_one_key_at_its_depth_and_has_its_length(counter, length):
    task = passkey_task(counter, length, seed=1)
    longest_filler = max(counter(list(FILLER)))
    depths = []
    for document in task.documents:
        assert document.text.count("pass key is") == 1
        start = document.text.index(next(part for part in document.text.split(". ")
                                          if "pass key is" in part))
        # The stated length and position are the tokenizer's own counts of the whole text.
        assert counter([document.text]) == [document.tokens - 2]
        assert counter([document.text[:start]]) == [document.needle_offset]
        assert length - longest_filler < document.tokens <= length
        filler = document.tokens - 2 - document.needle_tokens
        assert document.depth == pytest.approx(document.needle_offset / filler)
        depths.append(document.depth)
    # Every tenth of the depth range holds five of the fifty answering documents, give or take
    # the one filler sentence a needle moves to reach a sentence boundary.
    slack = longest_filler / (length - 40)
    for tenth in range(10):
        inside = sum(tenth / 10 - slack <= d < (tenth + 1) / 10 + slack for d in depths[:50])
        assert inside >= 5


def test_a_length_shorter_than_the_key_sentence_is_refused(counter):
    with pytest.raises(InputError, match=r"^length 20 is shorter than the passkey sentence itself "
                                         r"\(\d+ tokens with the special tokens, at this seed\); "
                                         r"use lengths of at least \d+\.$"):
        passkey_task(counter, 20, seed=0)
