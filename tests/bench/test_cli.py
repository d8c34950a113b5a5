"""The benchmarks' command line (mosaic_encoder.bench.cli) and result files (.results)."""

import csv
import json
import subprocess
import sys

import pytest

from mosaic_encoder.bench.cli import build_parser, main
from mosaic_encoder.bench.results import SCHEMA, load_results, new_document, write_results


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
