"""The needle task: real prose cut to length, template facts no haystack answers."""

import pytest

from mosaic_encoder.errors import InputError
from mosaic_encoder.longembed.needle import MAX_SENTENCE_TOKENS, TEMPLATES, Haystack, needle_task


def test_the_default_haystack_is_the_language_reference(haystack):
    assert haystack.source.startswith("the Python language reference")
    assert len(haystack.units.texts) > 1000
    assert max(haystack.units.counts) <= MAX_SENTENCE_TOKENS


def test_deterministic_per_seed_and_length(counter, haystack):
    task = needle_task(counter, haystack, 512, seed=0)
    needle_task(counter, haystack, 1024, seed=0)
    assert needle_task(counter, haystack, 512, seed=0) == task
    assert needle_task(counter, haystack, 512, seed=1).documents != task.documents


def test_each_question_is_answered_by_its_fact_only(counter, haystack):
    task = needle_task(counter, haystack, 1024, seed=2)
    assert (len(task.queries), len(task.documents)) == (50, 100)
    people = [d.text for d in task.documents]
    questions = {template[1].split("{name}")[0] for template in TEMPLATES}
    for number, question in enumerate(task.queries):
        assert any(question.startswith(q) for q in questions)
        name = _name(question)
        holders = [i for i, text in enumerate(people) if name in text]
        assert holders == [number]
        assert name.split()[0].lower() not in haystack.words
        assert name.split()[1].lower() not in haystack.words
    for document in task.documents:
        assert 1024 - MAX_SENTENCE_TOKENS < document.tokens <= 1024
        assert counter([document.text]) == [document.tokens - 2]


def _name(question: str) -> str:
    """The person a question names: the two capitalised words after the first one."""
    words = question.replace("'s", " ").rstrip("?").split()
    capitalised = [w for w in words[1:] if w[0].isupper()]
    return " ".join(capitalised[:2])


def test_a_haystack_file(tmp_path, counter):
    path = tmp_path / "prose.txt"
    path.write_text("The river runs to the sea.\nIt carries\nsilt and stones. Boats follow it.\n")
    haystack = Haystack.read(path, counter)
    assert haystack.units.texts == ["The river runs to the sea.", "It carries silt and stones.",
                                    "Boats follow it."]
    assert haystack.source == f"haystack file {path}"
    task = needle_task(counter, haystack, 200, seed=0)
    assert all("The river runs to the sea." in d.text for d in task.documents)


@pytest.mark.parametrize("text, message", [
    ("\n  \n", "holds no text"),
    ("many " * 100 + "words.\n", f"holds no sentence of at most {MAX_SENTENCE_TOKENS} tokens"),
])
def test_a_haystack_without_usable_text_is_one_sentence(tmp_path, counter, text, message):
    path = tmp_path / "haystack.txt"
    path.write_text(text)
    with pytest.raises(InputError, match=f"^haystack file {path} {message}\\.$"):
        Haystack.read(path, counter)


def test_a_missing_haystack_file_is_one_sentence(tmp_path, counter):
    with pytest.raises(InputError, match="haystack file .* does not exist"):
        Haystack.read(tmp_path / "nothing.txt", counter)
