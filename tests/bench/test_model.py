"""The whole-model benchmark (mosaic_encoder.bench.model): smoke runs at tiny sizes, in process
and isolated in child processes. No timing is ever asserted."""

import json

import pytest

import torch

from mosaic_encoder.bench.cli import main
from mosaic_encoder.bench.model import MODEL_FIELDS, build_model


def test_model_smoke(tmp_path):
    out = tmp_path / "model.json"
    status = main(["model", "--device", "cpu", "--hidden", "32", "--layers", "2",
                         "--heads", "4", "--intermediate", "64", "--vocab", "1200",
                         "--lengths", "24,40", "--corpus-docs", "6", "--corpus-max-len", "48",
                         "--corpus-batch-size", "4", "--min-samples", "1", "--out", str(out)])
    assert status == 0
    document = json.loads(out.read_text())
    assert document["kind"] == "model" and document["command"].startswith(
        "python -m mosaic_encoder.bench model")
    rows = document["rows"]
    assert [(r["impl"], r["case"], r["seqlen"]) for r in rows] == [
        ("ours-sdpa", "single", 24), ("baseline", "single", 24),
        ("ours-sdpa", "single", 40), ("baseline", "single", 40),
        ("ours-sdpa", "corpus", max(r["seqlen"] for r in rows if r["case"] == "corpus")),
        ("baseline", "corpus", max(r["seqlen"] for r in rows if r["case"] == "corpus"))]
    for row in rows:
        assert set(row) == set(MODEL_FIELDS)
        assert row["status"] == "ok", row
        assert row["tokens_per_s"] == pytest.approx(row["real_tokens"] / row["time_s"])
        assert row["peak_bytes"] > 0
    corpus = [r for r in rows if r["case"] == "corpus"]
    assert corpus[0]["real_tokens"] == sum(corpus[0]["seqlens"]) and corpus[0]["num_seqs"] == 6
    assert corpus[0]["padded_tokens"] >= corpus[0]["real_tokens"]
    for row in rows:
        if row["impl"] == "baseline":
            # the (heads, N, N) float32 table, N = max(S, alibi_starting_size = 4096)
            assert row["state_bytes"] == 4 * 4096 * 4096 * 4
        else:
            assert row["max_abs_diff_vs_baseline"] < 1e-4
            assert row["speedup_vs_baseline"] > 0


def test_model_isolated_reports_rss(tmp_path):
    out = tmp_path / "model.json"
    status = main(["model", "--device", "cpu", "--hidden", "32", "--layers", "1",
                         "--heads", "2", "--intermediate", "64", "--vocab", "1200",
                         "--lengths", "16", "--corpus-docs", "0", "--min-samples", "1",
                         "--alibi-starting-size", "1024", "--isolate", "--out", str(out)])
    assert status == 0
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 2
    for row in rows:
        assert row["status"] == "ok" and row["isolated"] is True, row
        assert row["peak_rss_bytes"] >= row["rss_before_bytes"] > 0
    baseline = next(r for r in rows if r["impl"] == "baseline")
    # the baseline's child built a 2 x 1024 x 1024 float32 table before its first call
    assert baseline["state_bytes"] == 2 * 1024 * 1024 * 4


def test_model_window_both(tmp_path):
    """--window both: an ours row per setting, one baseline row; both outputs match it."""
    out = tmp_path / "model.json"
    status = main(["model", "--device", "cpu", "--hidden", "32", "--layers", "1",
                   "--heads", "4", "--intermediate", "64", "--vocab", "1200",
                   "--lengths", "24", "--corpus-docs", "0", "--min-samples", "1",
                   "--alibi-starting-size", "64", "--window", "both", "--out", str(out)])
    assert status == 0
    document = json.loads(out.read_text())
    assert document["settings"]["window"] == "both"
    rows = document["rows"]
    assert [(r["impl"], r["window"]) for r in rows] == [
        ("ours-sdpa", True), ("ours-sdpa", False), ("baseline", None)]
    for row in rows[:2]:
        assert row["status"] == "ok" and row["speedup_vs_baseline"] > 0, row
        assert row["max_abs_diff_vs_baseline"] < 1e-4


def test_build_model_sets_attention_window():
    spec = dict(dtype="float32", attention="sdpa", checkpoint=None, seed=0,
                geometry=dict(hidden=32, layers=2, heads=4, intermediate=64, vocab=100))
    for window in (True, False):
        model = build_model(dict(spec, window=window), torch.device("cpu"))
        assert model.config.attention_window is window
        assert all(layer.attention.self.attention_window is window
                   for layer in model.encoder.layer)
