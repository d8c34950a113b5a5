"""``mosaic-encoder train``: the card's defaults, and one clear error for bad input."""

import resource
import signal
import subprocess
import sys

import pytest
from safetensors.torch import load_file

from mosaic_encoder.cli import build_parser, main

from helpers import TINY, pairs, write_jsonl


def test_defaults_are_the_model_cards():
    args = build_parser().parse_args(["train", "--model", "m", "--data", "d.jsonl",
                                      "--output", "o"])
    assert (args.lr, args.weight_decay, args.warmup_steps, args.batch_size, args.max_seq_length,
            args.scale, args.max_grad_norm) == (2e-5, 0.01, 500, 16, 2048, 20.0, 1.0)
    assert args.chunk_size is None and args.epochs == 1


def test_python_dash_m_runs_the_same_command():
    finished = subprocess.run([sys.executable, "-m", "mosaic_encoder", "train", "--help"],
                              capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0 and "--chunk-size" in finished.stdout


def test_trains_from_the_command_line(tmp_path, capsys):
    data = write_jsonl(tmp_path / "d.jsonl", pairs(8))
    code = main(["train", "--model", str(TINY), "--data", str(data), "--eval-data", str(data),
                 "--output", str(tmp_path / "out"), "--batch-size", "4", "--steps", "2",
                 "--max-seq-length", "24", "--no-progress"])
    assert code == 0
    err = capsys.readouterr().err
    assert "trained 2 steps" in err and "held-out recall@1" in err
    assert (tmp_path / "out" / "model.safetensors").is_file()


def test_a_resumed_run_says_what_ran_and_compares_with_its_first_evaluation(tmp_path, capsys):
    data = write_jsonl(tmp_path / "d.jsonl", pairs(8))
    argv = ["train", "--model", str(TINY), "--data", str(data), "--eval-data", str(data),
            "--output", str(tmp_path / "out"), "--batch-size", "4", "--max-seq-length", "16",
            "--eval-every", "2", "--no-progress"]
    assert main(argv + ["--steps", "4"]) == 0
    first = capsys.readouterr().err.strip()
    assert main(argv + ["--steps", "6", "--resume"]) == 0
    resumed = capsys.readouterr().err.strip()
    assert f"trained 4 steps -> {tmp_path / 'out'}; mean loss of steps 1-2 " in first
    assert f"trained 2 steps (5-6 of 6, resumed from step 4) -> {tmp_path / 'out'}; mean loss " \
           f"of steps 5 " in resumed
    assert "held-out recall@1 " in resumed and " (step 0) -> " in resumed and "(step 6), MRR" \
        in resumed


def _bad_inputs(tmp_path):
    good = write_jsonl(tmp_path / "good.jsonl", pairs(8))
    missing_column = write_jsonl(tmp_path / "cols.jsonl", [{"anchor": "a", "answer": "b"}])
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    latin1 = tmp_path / "latin1.jsonl"
    latin1.write_bytes('{"anchor": "caf\u00e9", "positive": "p"}\n'.encode("latin-1"))
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "thesis.tex").write_text("precious", encoding="utf-8")
    return {
        "missing column": ([missing_column], {}, "has no string field 'positive'"),
        "empty file": ([empty], {}, "holds no examples"),
        "non-UTF-8 file": ([latin1], {}, "is not UTF-8 text"),
        "batch larger than data": ([good], {"--batch-size": "16"},
                                   "holds 8 examples, fewer than the batch size 16"),
        "output holds other files": ([good], {"--output": str(occupied)},
                                     "holds thesis.tex, which is not part of a training"),
        "infinite learning rate": ([good], {"--lr": "inf"}, "learning_rate = inf is out of range"),
        "infinite weight decay": ([good], {"--weight-decay": "inf"},
                                  "weight_decay = inf is out of range"),
        "infinite scale": ([good], {"--scale": "inf"}, "scale = inf is out of range"),
        "seed beyond 2**63": ([good], {"--seed": str(2 ** 64)},
                              f"seed = {2 ** 64} is out of range"),
    }


@pytest.mark.parametrize("case", ["missing column", "empty file", "non-UTF-8 file",
                                  "batch larger than data", "output holds other files",
                                  "infinite learning rate", "infinite weight decay",
                                  "infinite scale", "seed beyond 2**63"])
def test_bad_input_is_one_line_and_loses_nothing(tmp_path, capsys, case):
    files, flags, message = _bad_inputs(tmp_path)[case]
    output = flags.pop("--output", str(tmp_path / "out"))
    argv = ["train", "--model", str(TINY), "--data", *map(str, files), "--output", output,
            "--batch-size", "4", "--no-progress"]
    for flag, value in flags.items():
        if flag in argv:
            argv[argv.index(flag) + 1] = value
        else:
            argv += [flag, value]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert not (tmp_path / "out").exists()
    assert (tmp_path / "occupied" / "thesis.tex").read_text(encoding="utf-8") == "precious"


def test_a_diverging_run_stops_in_one_sentence_and_saves_no_nan(tmp_path, capsys):
    data = write_jsonl(tmp_path / "d.jsonl", pairs(8))
    output = tmp_path / "out"
    code = main(["train", "--model", str(TINY), "--data", str(data), "--output", str(output),
                 "--batch-size", "4", "--steps", "6", "--warmup-steps", "0", "--save-every",
                 "1", "--keep-checkpoints", "6", "--max-seq-length", "16", "--lr", "1e30",
                 "--no-progress"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(lines) == 1, lines
    assert lines[0].startswith("error: training stopped at step "), lines
    for weights in output.rglob("model.safetensors") if output.exists() else []:
        assert all(tensor.isfinite().all() for tensor in load_file(weights).values()), weights


def test_an_output_on_a_read_only_file_system_is_one_sentence(tmp_path):
    """--output on a read-only file system: a read-only tmpfs, mounted in a user and mount
    namespace of the test's own (no privileges needed), the command run inside it."""
    data = write_jsonl(tmp_path / "d.jsonl", pairs(8))
    mount = tmp_path / "read-only"
    mount.mkdir()
    command = ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
               'mount -t tmpfs -o ro none "$1" && shift && exec "$@"', "sh", str(mount),
               sys.executable, "-m", "mosaic_encoder", "train", "--model", str(TINY), "--data",
               str(data), "--output", str(mount / "run"), "--batch-size", "4", "--steps", "1",
               "--max-seq-length", "16", "--no-progress"]
    failed = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert failed.returncode == 1 and failed.stdout == "", failed.stderr
    assert failed.stderr == f"error: cannot write {mount / 'run'} (Read-only file system).\n"


def _limit_file_size(limit: int):
    def preexec():
        # Writes past the limit fail with EFBIG, as on a full disk (SIGXFSZ would kill instead).
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return preexec


def test_a_full_disk_leaves_nothing_and_a_rerun_works(tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", pairs(8))
    output = tmp_path / "out"
    command = [sys.executable, "-m", "mosaic_encoder", "train", "--model", str(TINY),
               "--data", str(data), "--output", str(output), "--batch-size", "4", "--steps", "1",
               "--max-seq-length", "16", "--no-progress"]
    size = (TINY / "model.safetensors").stat().st_size
    failed = subprocess.run(command, capture_output=True, text=True, timeout=300,
                            preexec_fn=_limit_file_size(size // 3))
    lines = failed.stderr.strip().splitlines()
    assert failed.returncode == 1 and len(lines) == 1, failed.stderr[-3000:]
    assert lines[0].startswith("error: cannot write ") and "File too large" in lines[0], lines
    assert not output.exists()
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert (output / "model.safetensors").is_file()
