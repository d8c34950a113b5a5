"""Names: different within a draw, never a haystack word, and a clear refusal when they run out."""

import random

import pytest

from mosaic_encoder.errors import InputError
from mosaic_encoder.longembed.names import FAMILY, GIVEN, distinct_names


def test_names_are_distinct_and_avoid_excluded_words():
    names = distinct_names(random.Random(0), 300, {"orla", "fenwick"})
    assert len(set(names)) == 300
    assert not {"Orla", "Fenwick"} & {part for name in names for part in name.split()}


def test_too_few_names_left_is_one_sentence():
    excluded = {name.lower() for name in GIVEN[1:]}
    with pytest.raises(InputError, match=f"only {len(FAMILY)} names are not words of the "
                                         f"haystack, fewer than the 100 documents"):
        distinct_names(random.Random(0), 100, excluded)
