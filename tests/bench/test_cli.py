"""The benchmarks' command line (mosaic_encoder.bench.cli) and result files (.results)."""

import csv
import json
import subprocess
import sys

import pytest

from mosaic_encoder.bench.cli import build_parser, main
from mosaic_encoder.bench.report import render
from mosaic_encoder.bench.results import (SCHEMA, load_results, new_document, row_label,
                                          window_settings, write_results)


def test_a_subcommand_is_required():
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([])
    assert exit_info.value.code == 2


def test_shared_options_parse_the_same_in_both_benchmarks():
    parser = build_parser()
    for command in ("attention", "model"):
        args = parser.parse_args([command, "--device", "cpu", "--seed", "3", "--quick",
                                  "--max-dense-gib", "2", "--alibi-starting-size", "64"])
        assert (args.device, args.seed, args.quick, args.max_dense_gib,
                args.alibi_starting_size, args.min_samples) == ("cpu", 3, True, 2.0, 64, None)
    with pytest.raises(SystemExit):
        parser.parse_args(["attention", "--lengths", "0"])


def test_window_switch_is_shared():
    parser = build_parser()
    for command in ("attention", "model"):
        assert parser.parse_args([command]).window == "on"
        assert parser.parse_args([command, "--window", "both"]).window == "both"
        with pytest.raises(SystemExit):
            parser.parse_args([command, "--window", "maybe"])
    assert [window_settings(c) for c in ("on", "off", "both")] == [(True,), (False,),
                                                                   (True, False)]
    with pytest.raises(ValueError, match="--window"):
        window_settings("maybe")


def test_window_off_rows_keep_their_own_label_in_reports():
    """On and off rows of one shape are two columns (attention) or two lines (model); rows that
    predate the field read as before."""
    assert row_label({"impl": "ours-sdpa", "window": False}) == "ours-sdpa window off"
    assert row_label({"impl": "ours-sdpa", "window": True}) == "ours-sdpa"
    assert row_label({"impl": "naive"}) == "naive"
    base = dict(kind="attention", composition="single", seqlen=64, num_seqs=1, total_tokens=64,
                heads=2, head_dim=16, dtype="float32", mode="fwd", status="ok", peak_bytes=0,
                max_abs_err=None, max_abs_err_grad=None)
    document = new_document("attention", ["attention"], {"device": "cpu"}, {})
    document["rows"] += [dict(base, impl="ours-sdpa", window=True, time_ms=1.0, tflops=2.0,
                              executed_tflops=1.0),
                         dict(base, impl="ours-sdpa", window=False, time_ms=3.0, tflops=0.5)]
    text = render(document)
    assert "| ours-sdpa | ours-sdpa window off |" in text
    assert "| 1.00 (2 / 1) | 3.00 (0.5) |" in text


def test_result_files_and_report_through_python_dash_m(tmp_path):
    document = new_document("model", ["model", "--quick"], {"device": "cpu"}, {})
    document["rows"].append({"kind": "model", "impl": "ours-sdpa", "case": "single",
                             "seqlen": 8, "num_seqs": 1, "real_tokens": 8, "padded_tokens": 8,
                             "status": "unsupported", "reason": "example", "seqlens": None})
    json_path, csv_path = write_results(document, tmp_path / "result")
    assert json_path.suffix == ".json" and load_results(json_path)["schema"] == SCHEMA
    with open(csv_path, newline="") as stream:
        assert [row["reason"] for row in csv.DictReader(stream)] == ["example"]
    assert document["command"] == "python -m mosaic_encoder.bench model --quick"
    # From another directory, as an installed command would run.
    done = subprocess.run([sys.executable, "-m", "mosaic_encoder.bench", "report", str(json_path)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "unsupported: example" in done.stdout
    assert main(["report", str(json_path)]) == 0
    assert main(["report", str(tmp_path / "missing.json")]) == 1
    assert json.loads(json_path.read_text())["kind"] == "model"
