import json

import pytest

from mosaic_encoder.bench.cli import main


def test_compiled_benchmark_writes_rows_and_environment(tmp_path, capsys):
    """A small run through the command line (aot_eager keeps the compiles cheap): every variant
    in every row, within tolerance of eager, with the CPU capability and the load beside the
    times; no graph after each variant's first call."""
    out = tmp_path / "compiled.json"
    assert main(["compiled", "--batches", "1,2", "--lengths", "12", "--min-samples", "1",
                 "--max-time", "1", "--backend", "aot_eager", "--out", str(out)]) == 0
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
                 "--variants", "regional,whole", "--max-dense-bytes", "1000", "--max-time", "1",
                 "--backend", "aot_eager", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert all("whole_s" not in row and "regional_s" in row for row in rows)
    assert all(row["skipped"] == {"whole": "dense scores above --max-dense-bytes"} for row in rows)


def test_a_config_runs_with_random_weights_and_without_onnxruntime(tmp_path, capsys):
    """--config builds init's random weights for a geometry (what the GPU step runs); an ONNX
    file needs a checkpoint, so onnxruntime is refused there."""
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"vocab_size": 30528, "hidden_size": 32, "num_hidden_layers": 1,
                                  "num_attention_heads": 2, "intermediate_size": 48}))
    out = tmp_path / "compiled.json"
    assert main(["compiled", "--config", str(config), "--batches", "2", "--lengths", "10",
                 "--min-samples", "1", "--max-time", "1", "--threads", "1",
                 "--backend", "aot_eager", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["variants"] == ["regional", "whole"] and result["model"] == str(config)
    assert {row["threads"] for row in result["rows"]} == {1}
    assert main(["compiled", "--config", str(config), "--variants", "onnxruntime",
                 "--out", str(out)]) == 1
    assert "error: --variants onnxruntime runs on the CPU and from --model only." in \
        capsys.readouterr().err
