"""The masked-LM training-step benchmark against transformers' BertForMaskedLM."""

import json

import pytest

from mosaic_encoder.bench.cli import main
from mosaic_encoder.cli import main as mosaic_encoder


def test_quick_run_writes_both_cases_for_both_implementations(tmp_path, capsys):
    out = tmp_path / "mlm.json"
    assert main(["mlm", "--quick", "--device", "cpu", "--hidden", "32", "--layers", "1",
                 "--heads", "2", "--intermediate", "64", "--vocab", "1000", "--batch", "3",
                 "--length", "24", "--min-length", "8", "--max-length", "40", "--threads", "1",
                 "--out", str(out)]) == 0
    document = json.loads(out.read_text())
    rows = document["rows"]
    assert [(r["case"], r["impl"]) for r in rows] == [
        ("equal", "ours"), ("equal", "transformers-sdpa"),
        ("variable", "ours"), ("variable", "transformers-sdpa")]
    assert all(r["status"] == "ok" and r["tokens_per_s"] > 0 and r["peak_bytes"] > 0
               for r in rows)
    # The same batches and weights: the first step's loss agrees, the token counts too.
    for case in ("equal", "variable"):
        ours, theirs = (r for r in rows if r["case"] == case)
        assert ours["tokens"] == theirs["tokens"] and ours["predicted"] == theirs["predicted"]
        assert abs(ours["first_loss"] - theirs["first_loss"]) < 1e-4
    equal = next(r for r in rows if r["case"] == "equal")
    variable = next(r for r in rows if r["case"] == "variable")
    assert equal["tokens"] == equal["padded_tokens"] == 72
    assert variable["tokens"] < variable["padded_tokens"]
    assert set(document["speedup"]) == {"equal", "variable"}


@pytest.mark.parametrize("flags,message", [
    (["--vocab", "104"], "--vocab must be more than 104 (BERT's special tokens take the ids up to "
                         "103), got 104."),
    (["--min-length", "50", "--max-length", "40"], "--min-length (50) must not exceed "
                                                   "--max-length (40)."),
    (["--heads", "5"], "num_attention_heads"),
])
def test_options_that_cannot_run_are_one_sentence(capsys, flags, message):
    assert mosaic_encoder(["bench", "mlm", "--quick", "--hidden", "32", *flags]) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and message in captured.err, captured.err
    assert len(captured.err.splitlines()) == 1 and "Traceback" not in captured.err
