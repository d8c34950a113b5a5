"""Documents of a length in the model's tokens, with a needle at a depth."""

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mosaic_encoder.longembed.documents import (Units, assemble, document_depths, sentences,
                                                stratified_depths)

UNITS = Units(["One two three.", "Four five.", "Six seven eight nine ten."], [4, 3, 6])


def test_sentences_cut_after_stops_and_collapse_whitespace():
    assert sentences("First one.  Second\n one? Third! e.g. fourth") == [
        "First one.", "Second one?", "Third!", "e.g.", "fourth"]
    assert sentences("   ") == []


def test_counts_add_up_over_a_whole_document(counter, haystack):
    """WordPiece counts of sentences joined by spaces add up: the documents' lengths are exact."""
    texts = haystack.units.texts[:300]
    assert counter([" ".join(texts)]) == [sum(haystack.units.counts[:300])]
    assert counter.special_tokens == 2


@given(st.integers(3, 60), st.floats(0, 0.999), st.integers(0, 2))
def test_a_document_fills_its_length_and_places_its_needle(length, depth, start):
    needle_tokens, specials = 1, 2
    document = assemble(UNITS, start, "NEEDLE", needle_tokens, length, depth, specials)
    assert length - max(UNITS.counts) < document.tokens <= length
    words = document.text.split()
    assert words.count("NEEDLE") == 1
    before = document.text[:document.text.index("NEEDLE")]
    offset = sum(UNITS.counts[UNITS.texts.index(s)] for s in sentences(before))
    assert document.needle_offset == offset
    text_tokens = document.tokens - specials - needle_tokens
    assert document.depth == (offset / text_tokens if text_tokens else 0.0)
    # The needle is at the boundary nearest to the drawn depth: within half the longest unit.
    assert abs(offset - depth * text_tokens) <= max(UNITS.counts) / 2
    # Units follow each other round the ring from the start unit.
    rest = sentences(document.text.replace("NEEDLE", ""))
    ring = [UNITS.texts[(start + i) % 3] for i in range(len(rest))]
    assert rest == ring


def test_depths_fill_every_slice_once():
    depths = stratified_depths(random.Random(1), 50)
    assert sorted(int(d * 50) for d in depths) == list(range(50))
    both = document_depths(random.Random(1), 50, 100)
    assert len(both) == 100 and sorted(int(d * 50) for d in both[50:]) == list(range(50))


def test_units_need_tokens():
    with pytest.raises(ValueError):
        Units(["empty"], [0])
