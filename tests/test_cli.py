"""The command line through its real entry point (a subprocess), as a user meets it."""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import mosaic_encoder as me
from helpers import DATA, WEIGHTS
from mosaic_encoder.sentence import SentenceEncoder
from mosaic_encoder.tokenizer import TextTokenizer

GOLDEN = DATA / "expected"


def cli(*args, stdin=None, cwd=None):
    env = dict(os.environ, PYTHONIOENCODING="utf-8")
    return subprocess.run([sys.executable, "-m", "mosaic_encoder.cli", *map(str, args)],
                          input=stdin, capture_output=True, env=env, cwd=cwd)


def console_script() -> list[str]:
    """The installed ``mosaic-encoder`` script (the one next to this interpreter, else on PATH)."""
    found = shutil.which("mosaic-encoder", path=str(Path(sys.executable).parent)) or \
        shutil.which("mosaic-encoder")
    return [found] if found else [sys.executable, "-m", "mosaic_encoder.cli"]


def test_encode_default_checkpoint_prints_json_lines():
    result = cli("encode", "hello world", "second text")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.decode().splitlines()]
    assert [r["text"] for r in rows] == ["hello world", "second text"]
    assert b"random-weight" in result.stderr
    expected = SentenceEncoder(WEIGHTS / "mosaic-tiny").encode(["hello world", "second text"])
    np.testing.assert_allclose(np.array([r["embedding"] for r in rows]), expected, atol=1e-6)


def test_encode_stdin_to_npy(tmp_path):
    output = tmp_path / "out.npy"
    result = cli("encode", "--model", str(WEIGHTS / "mosaic-tiny"), "--output", str(output),
                 stdin="one\ntwo\nthree\n".encode())
    assert result.returncode == 0, result.stderr
    assert np.load(output).shape == (3, 192)


def test_encode_text_file_through_the_console_script_equals_the_python_api(tmp_path):
    lines = ["A first line.", "", "A third line, after a blank one.", "ünïcödé"]
    (tmp_path / "in.txt").write_text("\r\n".join(lines) + "\r\n", encoding="utf-8")
    result = subprocess.run(console_script() + ["encode", "--input", "in.txt", "--output",
                                                "out.safetensors", "--model",
                                                str(WEIGHTS / "mosaic-tiny")],
                            capture_output=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"" and b"encoded 4 text(s)" in result.stderr
    with safe_open(str(tmp_path / "out.safetensors"), framework="np") as handle:
        assert list(handle.keys()) == ["embeddings"]
        embeddings = handle.get_tensor("embeddings")
    assert embeddings.dtype == np.float32
    np.testing.assert_array_equal(embeddings, SentenceEncoder(WEIGHTS / "mosaic-tiny").encode(lines))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt", "out.safetensors"]


def test_encode_jsonl_field_with_token_budget_and_truncation(tmp_path):
    texts = ["short", "a much longer text that will not fit in six tokens at all", "mid size text"]
    records = [json.dumps({"id": i, "body": t}) for i, t in enumerate(texts)]
    (tmp_path / "in.jsonl").write_text("\n".join(records[:2] + [""] + records[2:]) + "\n")
    result = cli("encode", "--input", "in.jsonl", "--field", "body", "--max-tokens", "12",
                 "--max-seq-length", "6", "--output", "out.jsonl", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert b"encoded 3 text(s)" in result.stderr and b"1 truncated" in result.stderr
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["text"] for r in rows] == texts
    expected = SentenceEncoder(WEIGHTS / "mosaic-tiny", max_seq_length=6).encode(texts)
    np.testing.assert_allclose(np.array([r["embedding"] for r in rows]), expected, atol=1e-6)


def test_fill_mask_top_k_matches_the_model(tmp_path):
    text = "The capital of France is [MASK]."
    result = cli("fill-mask", text, "--model", WEIGHTS / "mosaic-tiny-mlm", "--top-k", "4",
                 "--json")
    assert result.returncode == 0, result.stderr
    [row] = [json.loads(line) for line in result.stdout.decode().splitlines()]
    [mask] = row["masks"]
    tokenizer = TextTokenizer(WEIGHTS / "mosaic-tiny-mlm" / "tokenizer.json")
    ids, _, _ = tokenizer.encode_ids([text])
    assert mask["position"] == ids[0].index(103)
    with torch.inference_mode():
        logits = me.load_model(WEIGHTS / "mosaic-tiny-mlm")(torch.tensor(ids)).logits
    probabilities = torch.softmax(logits[0, mask["position"]], dim=-1)[:tokenizer.vocab_size]
    top = torch.topk(probabilities, 4)
    assert [p["id"] for p in mask["predictions"]] == top.indices.tolist()
    assert [p["token"] for p in mask["predictions"]] == [tokenizer.id_to_token(i)
                                                         for i in top.indices.tolist()]
    np.testing.assert_allclose([p["probability"] for p in mask["predictions"]],
                               top.values.numpy(), atol=1e-6)


def test_fill_mask_table_on_the_default_checkpoint():
    result = cli("fill-mask", "a [MASK] and a [MASK] here", "--top-k", "2")
    assert result.returncode == 0, result.stderr
    assert b"random-weight" in result.stderr
    lines = result.stdout.decode().splitlines()
    assert lines[0] == "a [MASK] and a [MASK] here"
    assert lines[1].startswith("  [MASK] 1 of 2 (token 2)") and lines[4].startswith("  [MASK] 2 of 2")
    assert len(lines) == 7 and all(float(line.split()[0]) > 0 for line in lines[2:4] + lines[5:7])


def test_verify_against_a_published_manifest_fails_briefly():
    result = cli("verify", WEIGHTS / "mosaic-tiny", "--against", "lodestone-base-4096-v1")
    assert result.returncode == 1 and result.stderr == b""
    out = result.stdout.decode()
    assert "FAIL  manifest names" in out and "110 missing: encoder.layer.2-11.*" in out
    assert "4 of 18 checks failed" in out.splitlines()[-1]
    assert len(out.splitlines()) < 40 and max(len(line) for line in out.splitlines()) < 400


def write_bin_checkpoint(source: str, directory: Path) -> None:
    """A checkpoint directory as published: pytorch_model.bin (torch.save), tied decoder."""
    shutil.copytree(WEIGHTS / source, directory, ignore=shutil.ignore_patterns("model.safetensors"))
    tensors = load_file(WEIGHTS / source / "model.safetensors")
    if "cls.predictions.decoder.weight" in tensors:
        tensors["cls.predictions.decoder.weight"] = tensors["bert.embeddings.word_embeddings.weight"]
    torch.save(tensors, directory / "pytorch_model.bin")


@pytest.mark.parametrize("source", ["mosaic-tiny", "mosaic-tiny-mlm"])
def test_bin_convert_verify_golden_round_trip(tmp_path, source):
    directory = tmp_path / "ckpt"
    write_bin_checkpoint(source, directory)
    converted = cli("convert", directory)
    assert converted.returncode == 0, converted.stderr
    out = converted.stdout.decode()
    assert f"-> {directory / 'model.safetensors'}" in out and "(bfloat16)" in out
    assert ("stored once: cls.predictions.decoder.weight" in out) == (source == "mosaic-tiny-mlm")
    digest = hashlib.sha256((directory / "model.safetensors").read_bytes()).hexdigest()
    assert f"sha256 {digest}" in out
    golden = GOLDEN / f"{source}.safetensors"
    if source == "mosaic-tiny":  # the table for humans
        verified = cli("verify", directory, "--golden", golden)
        assert verified.returncode == 0, verified.stdout.decode()
        table = verified.stdout.decode()
        assert "FAIL" not in table and "PASS  golden texts" in table
        assert "structural checks only" in table and table.rstrip().endswith("checks passed")
        assert f"{digest}  13,577,792  model.safetensors" in table
    else:  # the report for scripts
        verified = cli("verify", directory, "--golden", golden, "--json")
        assert verified.returncode == 0, verified.stdout.decode()
        report = json.loads(verified.stdout)
        assert report["passed"] is True and all(c["passed"] for c in report["checks"])
        checks = {c["name"]: c["detail"] for c in report["checks"]}
        assert "not stored" in checks["tied weights"] and "golden texts" in checks
        assert {"path": "model.safetensors", "size": (directory / "model.safetensors").stat().st_size,
                "sha256": digest} in report["files"]
    assert verified.stderr == b""


# --- bad input: one sentence on stderr, non-zero exit, nothing on stdout, no file left ----------


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    """Checkpoint directories and input files, each broken in one way."""
    root = tmp_path_factory.mktemp("broken")

    def copy(name, source="mosaic-tiny"):
        shutil.copytree(WEIGHTS / source, root / name)
        return root / name

    (copy("not-json") / "config.json").write_text("{\"hidden_size\": 192,")
    values = json.loads((WEIGHTS / "mosaic-tiny" / "config.json").read_text())
    del values["num_hidden_layers"]
    (copy("no-field") / "config.json").write_text(json.dumps(values))
    data = (WEIGHTS / "mosaic-tiny" / "model.safetensors").read_bytes()
    (copy("truncated") / "model.safetensors").write_bytes(data[: len(data) // 3])
    (copy("corrupted") / "model.safetensors").write_bytes(data[:8] + b"\x00garbage" + data[16:])
    save_file({"transformer.wte.weight": torch.ones(4, 4), "transformer.h.0.attn.c_attn.weight":
               torch.ones(4, 12)}, copy("gpt2") / "model.safetensors")
    tensors = load_file(WEIGHTS / "mosaic-tiny" / "model.safetensors")
    tensors["encoder.layer.1.mlp.wo.weight"] = tensors["encoder.layer.1.mlp.wo.weight"][:, :100].contiguous()
    save_file(tensors, copy("wrong-shape") / "model.safetensors")
    (root / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    (root / "empty.txt").write_bytes(b"")
    (root / "blank.txt").write_bytes(b"\n \n\n")
    (root / "object.json").write_text('{"text": "one"}')
    (root / "mixed.json").write_text('["one", 2]')
    (root / "bad.jsonl").write_text('{"text": "fine"}\n{"text": 3}\n')
    (root / "huge-number.jsonl").write_text('{"text": "a", "n": ' + "9" * 5000 + "}\n")
    (root / "deep.jsonl").write_text('{"text": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    os.link(root / "bad.jsonl", root / "bad-link.jsonl")
    (root / "garbage.bin").write_bytes(b"PK\x03\x04 not really a zip")
    (root / "exists.safetensors").write_bytes(b"keep me")
    # Finite bfloat16 weights whose activations overflow float32: NaN embeddings.
    tensors = load_file(WEIGHTS / "mosaic-tiny" / "model.safetensors")
    tensors["embeddings.LayerNorm.weight"] = torch.full_like(
        tensors["embeddings.LayerNorm.weight"], 1e38)
    save_file(tensors, copy("overflowing") / "model.safetensors", metadata={"format": "pt"})
    write_bin_checkpoint("mosaic-tiny", root / "bin-only")
    return root


# Each bad input of the issue, through the real entry point (a subprocess).
BAD_INPUTS = {
    "missing checkpoint directory": (["encode", "x", "--model", "{root}/nope"], "does not exist"),
    "missing input file": (["encode", "--input", "{root}/nope.txt"], "does not exist"),
    "config not JSON": (["verify", "{root}/not-json"], "is not valid JSON"),
    "config missing a field": (["encode", "x", "--model", "{root}/no-field"],
                               "missing the field(s) num_hidden_layers"),
    "truncated safetensors": (["verify", "{root}/truncated"], "truncated"),
    "corrupted safetensors": (["encode", "x", "--model", "{root}/corrupted"],
                              "not a safetensors file"),
    "another architecture": (["verify", "{root}/gpt2"], "not a BERT-family checkpoint"),
    "wrong shapes": (["encode", "x", "--model", "{root}/wrong-shape"],
                     "wrong shape for encoder.layer.1.mlp.wo.weight"),
    "input file not UTF-8": (["encode", "--input", "{root}/latin1.txt"], "is not UTF-8"),
    "stdin not UTF-8": (["encode"], "standard input line 1 is not UTF-8 text (invalid continuation "
                                   "byte at byte 3)"),
    "empty stdin": (["encode"], "no input texts"),
    "unknown output extension": (["encode", "x", "--output", "out.txt"],
                                 "must end in .npy, .jsonl or .safetensors"),
    "fill-mask without [MASK]": (["fill-mask", "no mask here", "a [MASK]"],
                                 "text 1 ('no mask here') has no [MASK] token"),
    "fill-mask on a non-MLM checkpoint": (["fill-mask", "a [MASK]", "--model",
                                           str(WEIGHTS / "mosaic-tiny")], "has no masked-LM head"),
    "output directory missing": (["encode", "x", "--output", "no/such/dir/out.npy"],
                                 "cannot be written"),
    "convert missing file": (["convert", "{root}/nope.bin"], "does not exist"),
    "non-finite embeddings": (["encode", "x", "--model", "{root}/overflowing", "--output",
                               "out.jsonl"], "1 of 1 embeddings are not finite"),
    "non-finite embeddings on stdout": (["encode", "x", "--model", "{root}/overflowing"],
                                        "are not finite"),
    "input from a device": (["encode", "--input", "/dev/zero"], "is not a regular file or a pipe"),
}
# More bad inputs, through cli.main in this process (the same code, without a torch import each).
BAD_INPUTS_IN_PROCESS = {
    "verify missing directory": (["verify", "{root}/nope"], "does not exist"),
    "another architecture (encode)": (["encode", "x", "--model", "{root}/gpt2"],
                                      "not a BERT-family checkpoint"),
    "empty input file": (["encode", "--input", "{root}/empty.txt"], "no input texts"),
    "blank input file": (["encode", "--input", "{root}/blank.txt"], "only blank lines"),
    "blank text arguments": (["encode", "", " "], "every text argument is blank"),
    "blank fill-mask argument": (["fill-mask", ""], "every text argument is blank"),
    ".json holding an object": (["encode", "--input", "{root}/object.json"],
                                "must hold a JSON array of texts (strings, or records with a "
                                "string field 'text'), not an object"),
    ".json array holding a number": (["encode", "--input", "{root}/mixed.json"],
                                     "mixed.json item 2 is a number, not a text"),
    "JSON lines without the field": (["encode", "--input", "{root}/bad.jsonl"],
                                     "line 2 has no string field 'text'"),
    "JSON lines with a 5,000-digit number": (["encode", "--input", "{root}/huge-number.jsonl"],
                                             "line 1 holds a number too large to read"),
    "JSON lines nested 100,000 deep": (["encode", "--input", "{root}/deep.jsonl"],
                                       "line 1 nests JSON values too deeply"),
    "texts and --input": (["encode", "x", "--input", "{root}/blank.txt"], "not both"),
    "output path is a directory": (["encode", "x", "--output", "adir.npy"], "is a directory"),
    "fill-mask texts and --input": (["fill-mask", "[MASK]", "--input", "{root}/latin1.txt"], "not both"),
    "verify golden missing": (["verify", str(WEIGHTS / "mosaic-tiny"), "--golden", "nope"],
                              "golden file nope does not exist"),
    "verify unknown manifest": (["verify", str(WEIGHTS / "mosaic-tiny"), "--against", "bert"],
                                "known names: lodestone-base-4096-v1"),
    "verify a directory holding only pytorch_model.bin": (["verify", "{root}/bin-only"],
                                                           "convert it first"),
    "convert unreadable pickle": (["convert", "{root}/garbage.bin"],
                                  "not a readable PyTorch checkpoint"),
    "convert over an existing file": (["convert", "{root}/garbage.bin", "--output",
                                       "{root}/exists.safetensors"], "already exists"),
    "convert to another extension": (["convert", "{root}/garbage.bin", "--output", "x.bin"],
                                     "must end in .safetensors"),
    "encode over an existing file": (["encode", "x", "--output", "{root}/exists.safetensors"],
                                     "exists; pass --force to replace it"),
    "encode over its input file": (["encode", "--input", "{root}/bad.jsonl", "--output",
                                    "{root}/bad.jsonl", "--force"], "is the input file"),
    "encode over a hard link to its input": (["encode", "--input", "{root}/bad.jsonl", "--output",
                                             "{root}/bad-link.jsonl", "--force"],
                                            "is the input file"),
    "encode into the model directory": (["encode", "x", "--model", "{root}/truncated", "--output",
                                         "{root}/truncated/model.safetensors", "--force"],
                                        "inside the model directory"),
    "device meta": (["encode", "x", "--device", "meta"], "--device meta is not supported"),
    "device mps": (["encode", "x", "--device", "mps"], "--device mps is not supported"),
    "device xpu": (["fill-mask", "[MASK]", "--device", "xpu"], "--device xpu is not supported"),
    "max-seq-length 0": (["encode", "x", "--max-seq-length", "0"],
                         "--max-seq-length must be an integer from 2"),
    "max-seq-length past int32": (["encode", "x", "--max-seq-length", "9" * 5000],
                                  "--max-seq-length must be an integer from 2"),
    "max-seq-length not a number": (["fill-mask", "[MASK]", "--max-seq-length", "many"],
                                    "--max-seq-length must be an integer from 2"),
    "fill-mask [MASK] cut by truncation": (["fill-mask", "one two three four five [MASK]",
                                            "--max-seq-length", "4"],
                                           "has its [MASK] after the first 4 tokens"),
}
STDIN = {"stdin not UTF-8": b"caf\xe9\n", "empty stdin": b""}


@pytest.fixture(scope="module")
def bad_runs(broken, tmp_path_factory):
    """Every bad-input case, run concurrently (each is a fresh interpreter importing torch), each
    in its own working directory holding only an empty directory ``adir.npy``."""
    base = tmp_path_factory.mktemp("bad-runs")
    before = snapshot(broken)

    def run(number_and_case):
        number, case = number_and_case
        cwd = base / f"case{number}"
        (cwd / "adir.npy").mkdir(parents=True)
        args, _ = BAD_INPUTS[case]
        return case, (cwd, cli(*[a.format(root=broken) for a in args],
                                stdin=STDIN.get(case, b"ignored"), cwd=cwd))

    with ThreadPoolExecutor(max_workers=4) as pool:
        runs = dict(pool.map(run, enumerate(BAD_INPUTS)))
    return runs, before, snapshot(broken)


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).digest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def check_one_sentence(returncode: int, stdout: str, stderr: str, message: str) -> None:
    assert returncode == 1, stderr
    assert message in stderr, stderr
    assert stdout == "" and "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1
    assert stderr.startswith("error: ") and stderr.strip().endswith(".")


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_sentence(bad_runs, case):
    runs, before, after = bad_runs
    cwd, result = runs[case]
    check_one_sentence(result.returncode, result.stdout.decode(), result.stderr.decode(),
                       BAD_INPUTS[case][1])
    # No file was left behind, partial or temporary, and no input was touched.
    assert sorted(p.name for p in cwd.iterdir()) == ["adir.npy"]
    assert list((cwd / "adir.npy").iterdir()) == []
    assert before == after


@pytest.mark.parametrize("case", list(BAD_INPUTS_IN_PROCESS))
def test_more_bad_input_is_one_sentence(broken, tmp_path, monkeypatch, capsys, case):
    from mosaic_encoder.cli import main

    args, message = BAD_INPUTS_IN_PROCESS[case]
    (tmp_path / "adir.npy").mkdir()
    monkeypatch.chdir(tmp_path)
    before = snapshot(broken)
    returncode = main([a.format(root=broken) for a in args])
    captured = capsys.readouterr()
    check_one_sentence(returncode, captured.out, captured.err, message)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir.npy"]
    assert snapshot(broken) == before


@pytest.mark.parametrize("args,message", [
    (["encode", "x", "--batch-size", "0"], "must be a positive integer"),
    (["encode", "x", "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    (["verify"], "the following arguments are required: DIR"),
    (["frobnicate"], "invalid choice"),
])
def test_usage_errors_exit_2(capsys, args, message):
    from mosaic_encoder.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(args)
    captured = capsys.readouterr()
    assert exit_info.value.code == 2 and message in captured.err and captured.out == ""


@pytest.mark.parametrize("field,value", [("num_hidden_layers", 10**9), ("num_hidden_layers", 10**5),
                                         ("hidden_size", 2**40), ("vocab_size", 2**62)])
def test_config_geometry_bombs_are_one_short_line(tmp_path, capsys, field, value):
    directory = tmp_path / "ckpt"
    shutil.copytree(WEIGHTS / "mosaic-tiny", directory)
    values = json.loads((directory / "config.json").read_text())
    values[field] = value
    values["num_attention_heads"] = 1  # so that hidden_size 2**40 is a valid geometry
    (directory / "config.json").write_text(json.dumps(values))
    from mosaic_encoder.cli import main

    out = tmp_path / "e.npy"
    assert main(["encode", "x", "--model", str(directory), "--output", str(out)]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.splitlines()) == 1
    assert f"{field} is {value} but the weights" in captured.err and len(captured.err) < 500
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_encode_reads_the_texts_of_a_json_array(tmp_path):
    """A .json input is an array of texts, or of records whose --field is the text; a blank
    text among others is kept in place, as a blank line of a text file is."""
    texts = ["first", "", "third text"]
    (tmp_path / "texts.json").write_text(json.dumps(texts))
    (tmp_path / "records.json").write_text(json.dumps([{"body": t, "id": i}
                                                       for i, t in enumerate(texts)]))
    expected = SentenceEncoder(WEIGHTS / "mosaic-tiny").encode(texts)
    for name, flags in (("texts.json", []), ("records.json", ["--field", "body"])):
        output = tmp_path / f"{name}.npy"
        result = cli("encode", "--input", tmp_path / name, *flags, "--output", output)
        assert result.returncode == 0, result.stderr
        np.testing.assert_allclose(np.load(output), expected, rtol=0, atol=1e-6)


def test_encode_replaces_an_existing_output_with_force(tmp_path):
    output = tmp_path / "out.npy"
    output.write_bytes(b"old")
    result = cli("encode", "x", "--output", output, "--force")
    assert result.returncode == 0, result.stderr
    assert np.load(output).shape == (1, 192)


def run_isolated(args, **streams):
    """The CLI with the given standard streams (files or None for inherited ones)."""
    streams.setdefault("stdout", subprocess.PIPE)
    streams.setdefault("stderr", subprocess.PIPE)
    return subprocess.run([sys.executable, "-m", "mosaic_encoder.cli", *args], **streams)


def test_argument_that_is_not_utf8():
    result = run_isolated(["encode", "fine", b"caf\xe9"])
    check_one_sentence(result.returncode, result.stdout.decode(), result.stderr.decode(),
                       "text argument 2 is not UTF-8 (byte 0xe9 at position 3)")


def test_closed_stdin():
    result = subprocess.run(["sh", "-c", '"$0" -m mosaic_encoder.cli encode <&-', sys.executable],
                            capture_output=True)
    check_one_sentence(result.returncode, result.stdout.decode(), result.stderr.decode(),
                       "standard input is closed")


def test_closed_stderr_keeps_the_error_out_of_stdout(tmp_path):
    """Started with its error stream closed (``2>&-``), the CLI still fails with status 1, and
    the sentence meant for stderr does not land in stdout, where the embeddings go."""
    result = subprocess.run(["sh", "-c", '"$0" -m mosaic_encoder.cli encode x --model "$1" 2>&-',
                             sys.executable, tmp_path / "missing"], capture_output=True)
    assert result.returncode == 1 and result.stdout == b""


def test_stdin_without_end_is_capped():
    with open("/dev/zero", "rb") as zeros:
        result = run_isolated(["encode"], stdin=zeros)
    check_one_sentence(result.returncode, result.stdout.decode(), result.stderr.decode(),
                       "standard input line 1 is longer than 16 MiB")


@pytest.mark.parametrize("command", [["encode", "x"], ["fill-mask", "a [MASK]"]])
def test_stdout_on_a_full_device(command):
    with open("/dev/full", "wb") as full:
        result = run_isolated(command, stdout=full)
    stderr = result.stderr.decode()
    assert result.returncode == 1 and "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] == \
        "error: standard output cannot be written (No space left on device)."


def test_an_error_message_cannot_forge_lines_or_colours(tmp_path, capsys):
    from mosaic_encoder.cli import main

    forged = tmp_path / "m\n\x1b[31mTraceback (most recent call last):"
    assert main(["encode", "x", "--model", str(forged)]) == 1
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and "\x1b" not in captured.err
    assert "does not exist" in captured.err and "\\x1b[31mTraceback" in captured.err


@pytest.mark.parametrize("args,message", [
    (["x", "--model", "{loop}", "--output", "{tmp}/o.npy"], "checkpoint directory .* symlink loop"),
    (["x", "--output", "{loop}.npy"], "output file .* is a symlink loop"),
    (["--input", "{loop}.txt", "--output", "{tmp}/o.npy"], "input file .* is a symlink loop"),
])
def test_a_symlink_loop_is_one_sentence(tmp_path, capsys, args, message):
    from mosaic_encoder.cli import main

    loop = tmp_path / "loop"
    for suffix in ("", ".npy", ".txt"):
        os.symlink(f"{loop}{suffix}", f"{loop}{suffix}")
    argv = [a.format(loop=loop, tmp=tmp_path) for a in args]
    assert main(["encode", *argv]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.search(message, err)


def test_encode_compile_equals_eager_and_reports_the_first_batch(tmp_path):
    """--compile runs inductor: same embeddings within 1e-5, and a line on the first batch."""
    texts = "A first line.\nA second, longer line of text.\nthird\n".encode()
    outputs = {}
    for flags in ((), ("--compile",)):
        output = tmp_path / f"out{len(flags)}.npy"
        result = cli("encode", "--output", output, *flags, stdin=texts)
        assert result.returncode == 0, result.stderr
        outputs[flags] = np.load(output)
        assert (b"compiled: the first batch took" in result.stderr) == bool(flags)
    np.testing.assert_allclose(outputs[("--compile",)], outputs[()], rtol=0, atol=1e-5)


def test_encode_prompt_and_prompt_name(tmp_path):
    """encode --prompt TEXT and --prompt-name NAME (a prompt saved by train) give the embeddings
    of the prompted texts."""
    model = tmp_path / "model"
    shutil.copytree(WEIGHTS / "mosaic-tiny", model)
    (model / "config_sentence_transformers.json").write_text(
        json.dumps({"prompts": {"query": "query: "}, "default_prompt_name": None}))
    by_text = cli("encode", "--model", str(model), "--prompt", "query: ", "a text")
    by_name = cli("encode", "--model", str(model), "--prompt-name", "query", "a text")
    plain = cli("encode", "--model", str(model), "query: a text")
    assert by_text.returncode == by_name.returncode == plain.returncode == 0, by_name.stderr
    embedding = [json.loads(r.stdout)["embedding"] for r in (by_text, by_name, plain)]
    assert embedding[0] == embedding[1] == embedding[2]
    unknown = cli("encode", "--model", str(model), "--prompt-name", "passage", "a text")
    stderr = unknown.stderr.decode()
    assert unknown.returncode == 1 and stderr.count("\n") == 1, stderr
    assert "prompt name 'passage'" in stderr
