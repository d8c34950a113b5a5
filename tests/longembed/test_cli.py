"""``mosaic-encoder eval-longembed`` end to end on the bundled checkpoint, and its refusals."""

import json
import subprocess
import sys

import pytest

from helpers import TINY
from mosaic_encoder.cli import main

SMALL = ["eval-longembed", "--model", str(TINY), "--lengths", "48,96", "--batch-size", "128"]


def test_json_table_and_chart(tmp_path, capsys):
    chart = tmp_path / "scores.png"
    assert main([*SMALL, "--max-seq-length", "64", "--depths", "--json", "--plot",
                 str(chart)]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert chart.read_bytes().startswith(b"\x89PNG") and f"chart -> {chart}" in captured.err
    assert (result["queries"], result["documents"], result["max_seq_length"]) == (50, 100, 64)
    assert result["haystack"].startswith("the Python language reference")
    assert result["environment"]["cpu_capability"]
    assert [(r["task"], r["length"]) for r in result["rows"]] == [
        ("passkey", 48), ("passkey", 96), ("needle", 48), ("needle", 96)]
    for row in result["rows"]:
        assert 0 <= row["ndcg_at_1"] == row["recall_at_1"] <= 1 and 0 < row["mrr"] <= 1
        assert set(row["depths"]) == {"first", "middle", "last"}
        # Documents are never longer than their length: only the 96-token ones are cut.
        assert (row["truncated"] > 0) == (row["length"] == 96)

    assert main([*SMALL, "--task", "passkey", "--lengths", "96", "--max-seq-length", "64"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:6] == ["task", "length", "tokens", "nDCG@1", "recall@1", "MRR"]
    assert lines[1].split()[:2] == ["passkey", "96"]
    assert "truncated at 64: 100 documents cut" in lines[1]
    assert lines[-1].startswith("50 queries against 100 documents per task and length; chance: "
                                "nDCG@1 0.010, MRR 0.052")


@pytest.mark.parametrize("arguments, message", [
    (["--lengths", "20"], "error: length 20 is shorter than the passkey sentence itself"),
    (["--task", "needle", "--haystack", "EMPTY"], "error: haystack file EMPTY holds no text."),
    (["--plot", "chart.jpg"], "error: --plot file chart.jpg must end in .png."),
    (["--lengths", "256,2000000"], "error: --lengths go up to 1,048,576 tokens, got 2,000,000."),
    (["--model", "/nonexistent"], "error: "),
])
def test_bad_input_is_one_sentence(tmp_path, capsys, arguments, message):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    arguments = [str(empty) if a == "EMPTY" else a for a in arguments]
    assert main([*SMALL, *arguments]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(message.replace("EMPTY", str(empty)))
    assert len(captured.err.strip().splitlines()) == 1


def test_lengths_that_are_not_integers_are_a_usage_error(capsys):
    with pytest.raises(SystemExit) as done:
        main([*SMALL, "--lengths", "256,1k"])
    assert done.value.code == 2
    assert "argument --lengths: must be comma-separated lengths of at least 2, got '256,1k'" \
        in capsys.readouterr().err


def test_registering_the_command_loads_none_of_its_machinery():
    """The parser is built for every command: the tasks, the scoring and matplotlib wait for a
    run."""
    code = ("import sys, mosaic_encoder.longembed.cli; print(sorted(m for m in sys.modules if "
            "m.split('.')[0] == 'matplotlib' or m.startswith('mosaic_encoder.longembed.') and "
            "m != 'mosaic_encoder.longembed.cli'))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
