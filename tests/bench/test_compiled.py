import json

from mosaic_encoder.bench.cli import main


def test_compiled_benchmark_writes_rows_and_environment(tmp_path, capsys):
    """A small run through the command line (aot_eager keeps the compile cheap)."""
    out = tmp_path / "compiled.json"
    assert main(["compiled", "--batches", "2", "--seqlen", "12", "--min-samples", "1",
                 "--backend", "aot_eager", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [(r["batch"], r["padding"]) for r in result["rows"]] == [(2, "none"), (2, "mixed")]
    for row in result["rows"]:
        assert row["compiled_max_abs_diff"] <= 1e-5 and row["onnxruntime_max_abs_diff"] <= 1e-4
        assert row["eager_s"] > 0 and row["compiled_speedup"] > 0
    assert result["graphs"] == 1 and result["recompiles"] == 0
    assert result["environment"]["cpu_capability"]
    assert "first compile" in capsys.readouterr().out
