"""Long (first sentence, rest) pairs from standard-library docstrings."""

import json

from mosaic_encoder.longembed.pairs import long_pairs, main, packed, pair
from mosaic_encoder.pretraining.stdlib_corpus import held_out

from helpers import TINY


def test_docstrings_are_packed_up_to_the_limit():
    texts, counts = ["a", "b", "c", "d", "e"], [3, 3, 9, 4, 20]
    assert list(packed(texts, counts, 10)) == [("a b", 6), ("c", 9), ("d", 4)]


def test_a_pair_is_the_first_sentence_against_the_rest():
    assert pair("Heap queue. It keeps a list. In order.") == {
        "anchor": "Heap queue.", "positive": "It keeps a list. In order."}
    assert pair("One sentence only.") is None


def test_files_go_whole_to_one_side(counter):
    files = [("kept.py", "Tools for lists. " + "They sort things. " * 30),
             ("kept.py", "Another docstring of the same file. " * 5),
             ("short.py", "Too short. Far below the minimum.")]
    assert not held_out("kept.py")
    train, held = long_pairs(files, counter, min_tokens=100, max_tokens=400)
    assert held == [] and len(train) == 1
    assert train[0]["anchor"] == "Tools for lists."
    assert train[0]["positive"].endswith("Another docstring of the same file.")


def test_command_line_on_a_small_library(tmp_path):
    library = tmp_path / "lib"
    library.mkdir()
    body = "Details follow here. " * 40
    (library / "alpha.py").write_text(f'"""Alpha does one thing. {body}"""\n')
    (library / "beta.py").write_text(f'"""Beta does another. {body}"""\n')
    out = tmp_path / "pairs"
    assert main([str(out), "--model", str(TINY), "--stdlib", str(library), "--min-tokens", "50",
                 "--max-tokens", "500"]) == 0
    rows = [json.loads(line) for name in ("train.jsonl", "heldout.jsonl")
            for line in (out / name).read_text().splitlines()]
    assert sorted(r["anchor"] for r in rows) == ["Alpha does one thing.", "Beta does another."]
