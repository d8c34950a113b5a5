from mosaic_encoder.pretraining.stdlib_corpus import held_out, write_corpus


def test_split_is_by_source_file_and_nothing_is_in_both(tmp_path):
    root = tmp_path / "lib"
    (root / "pkg").mkdir(parents=True)
    for index in range(30):
        (root / "pkg" / f"m{index}.py").write_text(
            f'"""Module {index} explains its purpose in a sentence long enough to keep."""\n'
            f'def f():\n    """Function of module {index}: what it returns and when."""\n')
    (root / "test").mkdir()
    (root / "test" / "t.py").write_text('"""Tests are never part of the corpus, whatever."""\n')
    (root / "broken.py").write_text("def (:\n")
    counts = write_corpus(tmp_path / "train.txt", tmp_path / "held.txt", root)
    train = set((tmp_path / "train.txt").read_text().splitlines())
    held = set((tmp_path / "held.txt").read_text().splitlines())
    assert not train & held
    assert counts.held_out_documents == len(held) == 2 * sum(
        held_out(f"pkg/m{i}.py") for i in range(30))
    assert not any("Tests are never" in line for line in train | held)
    assert all("\n" not in line and "  " not in line for line in train | held)
