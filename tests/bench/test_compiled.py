import json

from mosaic_encoder.bench.cli import main


def test_compiled_benchmark_writes_rows_and_environment(tmp_path, capsys):
    """A small run through the command line (aot_eager keeps the compiles cheap): every variant
    in every row, within tolerance of eager, with the CPU capability and the load beside the
    times; no graph after each variant's first call."""
    out = tmp_path / "compiled.json"
    assert main(["compiled", "--batches", "1,2", "--lengths", "12", "--min-samples", "1",
                 "--backend", "aot_eager", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [(r["batch"], r["padding"]) for r in result["rows"]] == \
        [(1, "none"), (1, "mixed"), (2, "none"), (2, "mixed")]
    for row in result["rows"]:
        assert row["within_tolerance"]
        assert row["regional_max_abs_diff"] <= 1e-5 and row["whole_max_abs_diff"] <= 1e-5
        assert row["onnxruntime_max_abs_diff"] <= 1e-4
        assert row["eager_s"] > 0 and row["regional_speedup"] > 0 and row["whole_speedup"] > 0
        assert row["cpu_capability"] and len(row["load_average"]) == 2
        assert set(row["regional_compiled"]) == {"before", "after"}
    # Whole-model graphs specialise a batch of one, which the second batch size recompiles.
    assert result["graphs"] == {"regional": 2, "whole": 1}
    assert result["recompiles"] == {"regional": 0, "whole": 1}
    assert result["inductor"]["backend"] == "aot_eager"
    assert not result["inductor"]["regional_freezing"]  # freezing is inductor's
    assert result["environment"]["cpu_capability"]
    assert "first compile: regional" in capsys.readouterr().out


def test_padded_variants_skip_rows_beyond_the_dense_budget(tmp_path):
    out = tmp_path / "compiled.json"
    assert main(["compiled", "--batches", "2", "--lengths", "16", "--min-samples", "1",
                 "--variants", "regional,whole", "--max-dense-bytes", "1000",
                 "--backend", "aot_eager", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert all("whole_s" not in row and "regional_s" in row for row in rows)
    assert all(row["skipped"] == {"whole": "dense scores above --max-dense-bytes"} for row in rows)
