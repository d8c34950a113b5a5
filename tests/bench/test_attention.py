"""The attention benchmark (mosaic_encoder.bench.attention): compositions, the naive baseline's
memory on a hand-computed case, and smoke runs at tiny sizes that check the result schema and
every implementation's error against the float64 reference. No timing is ever asserted."""

import csv
import json
import os

import pytest
import torch

from mosaic_encoder.bench import attention
from mosaic_encoder.bench.cli import main
from mosaic_encoder.bench.flops import attention_flops
from mosaic_encoder.bench.measure import peak_memory
from mosaic_encoder.bench.results import SCHEMA

CPU = torch.device("cpu")


def test_compositions():
    assert attention.composition_seqlens("single", 300, 4096) == [300]
    assert attention.composition_seqlens("equal", 1024, 4096) == [1024] * 4
    assert attention.composition_seqlens("equal", 4096, 4096) == [4096] * 2
    mixed = attention.composition_seqlens("mixed", 512, 4096, seed=3)
    assert max(mixed) == 512 and sum(mixed) == 4096 and len(mixed) > 2
    assert min(mixed) >= 1
    assert mixed == attention.composition_seqlens("mixed", 512, 4096, seed=3)  # deterministic


@pytest.mark.parametrize("seqlen,heads,head_dim", [(256, 2, 16), (384, 3, 32)])
def test_naive_memory_hand_computed(seqlen, heads, head_dim):
    """Upstream-style attention keeps three (B, heads, S, S) float32 tensors alive at once (the
    bias, the pre-softmax scores and the probabilities) when it allocates the output; the
    (B, 1, 1, S) key mask is freed once the bias is built."""
    case = attention.Case("single", seqlen, (seqlen,), heads, head_dim, "float32")
    inp = attention.make_inputs(case, CPU)
    opts = attention.Options(device=CPU, alibi_starting_size=1)
    prepared = attention.SETUPS["naive"](inp, case, "fwd", opts)
    prepared.call()
    _, peak, _ = peak_memory(prepared.call, CPU)
    scores = heads * seqlen * seqlen * 4
    output = seqlen * heads * head_dim * 4
    expected = 3 * scores + output
    assert expected <= peak <= expected + 64 * 1024
    assert prepared.state_bytes == heads * seqlen * seqlen * 4  # the (heads, N, N) ALiBi table


ROW_TYPES = {
    "time_ms": float, "tflops": float, "flops": int, "peak_bytes": int, "state_bytes": int,
    "max_abs_err": float, "real_pairs": int, "samples": int, "setup_s": float,
}


@pytest.fixture(scope="module")
def attention_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "attention.json"
    argv = ["--device", "cpu", "--lengths", "32", "--compositions", "single,mixed",
            "--batch-tokens", "64", "--heads", "2", "--head-dims", "16",
            "--min-run-time", "0.01", "--min-samples", "1", "--flex-eager", "--out", str(out)]
    if os.environ.get("TRITON_INTERPRET") == "1":
        argv.append("--triton-interpret")
    status = main(["attention", *argv])
    return status, out


def test_attention_smoke_schema(attention_results):
    status, out = attention_results
    assert status == 0
    document = json.loads(out.read_text())
    assert document["schema"] == SCHEMA and document["kind"] == "attention"
    assert document["command"].startswith("python -m mosaic_encoder.bench attention ")
    for key in ("torch", "triton", "python", "device", "cpu", "git_commit"):
        assert key in document["environment"]
    assert "3.5" in document["conventions"]["flops"]
    rows = document["rows"]
    # every implementation x 2 compositions x 2 modes, each a row whatever happened
    assert len(rows) == len(attention.IMPLS) * 2 * 2
    assert {r["impl"] for r in rows} == set(attention.IMPLS)
    assert document["settings"]["window"] == "on"
    for row in rows:
        assert set(row) == set(attention.ATTENTION_FIELDS)
        assert row["status"] in ("ok", "unsupported"), row
        assert row["torch"] == torch.__version__ and row["device"]
        assert row["flops"] == attention_flops(row["seqlens"], 2, 16, row["mode"])
        if row["status"] != "ok":
            assert isinstance(row["reason"], str) and row["reason"]
            continue
        for key, kind in ROW_TYPES.items():
            assert isinstance(row[key], kind), (key, row)
        assert row["time_ms"] > 0 and row["tflops"] > 0 and row["peak_bytes"] >= 0
        assert row["tflops"] == pytest.approx(row["flops"] / (row["time_ms"] / 1e3) / 1e12)
        assert row["oracle"] == "float64"

    by = {(r["impl"], r["mode"], r["composition"]): r for r in rows}
    for mode in ("fwd", "fwd+bwd"):
        for composition in ("single", "mixed"):
            for impl in ("ours-sdpa", "sdpa-dense", "naive"):
                assert by[impl, mode, composition]["status"] == "ok"
            expected = "ok" if os.environ.get("TRITON_INTERPRET") == "1" else "unsupported"
            assert by["ours-triton", mode, composition]["status"] == expected
    for row in rows:  # the window (on by default) is recorded for ours only
        assert row["window"] is (True if row["impl"] in attention.WINDOWED else None)
    assert by["flex", "fwd+bwd", "single"]["status"] == "unsupported"  # no backward on CPU
    # padded implementations are credited the same (real) work as packed ones
    assert by["naive", "fwd", "mixed"]["flops"] == by["ours-sdpa", "fwd", "mixed"]["flops"]
    assert by["naive", "fwd", "mixed"]["padded_pairs"] > by["naive", "fwd", "mixed"]["real_pairs"]


def test_attention_smoke_executed_flops(attention_results):
    """ours-sdpa rows and forward ours-triton rows carry executed FLOPs, which at 32 or 64
    tokens (shorter than any reach here) equal the credited ones; the other rows report none."""
    _, out = attention_results
    for row in json.loads(out.read_text())["rows"]:
        reported = row["impl"] == "ours-sdpa" or (row["impl"], row["mode"]) == ("ours-triton",
                                                                                 "fwd")
        if reported and row["status"] == "ok":
            assert row["executed_flops"] == row["flops"], row
            assert row["executed_tflops"] == pytest.approx(row["tflops"])
        else:
            assert row["executed_flops"] is None and row["executed_tflops"] is None, row


def test_window_both_rows(tmp_path):
    """--window both: a row per setting for each of ours (the Triton kernel interpreted on
    CPU), one for the others; at 48 tokens (within every reach) executed equals credited."""
    out = tmp_path / "both.json"
    argv = ["attention", "--device", "cpu", "--impls", "ours-triton,ours-sdpa,naive",
            "--lengths", "48", "--compositions", "single", "--heads", "2", "--head-dims", "16",
            "--modes", "fwd", "--min-run-time", "0", "--min-samples", "1", "--window", "both",
            "--out", str(out)]
    if os.environ.get("TRITON_INTERPRET") == "1":
        argv.append("--triton-interpret")
    assert main(argv) == 0
    document = json.loads(out.read_text())
    assert document["settings"]["window"] == "both"
    rows = {(r["impl"], r["window"]): r for r in document["rows"]}
    assert list(rows) == [("ours-triton", True), ("ours-triton", False), ("ours-sdpa", True),
                          ("ours-sdpa", False), ("naive", None)]
    for (impl, _), row in rows.items():
        if impl == "naive" or row["status"] != "ok":  # ours-triton without the interpreter
            assert row["executed_flops"] is None
            continue
        assert row["within_tolerance"] is True
        assert row["executed_flops"] == row["flops"]


def test_window_both_executed_flops_where_windowing_skips(tmp_path):
    """lodestone's 12 slopes at 4096 tokens (queries in chunks of 170 rows; the steepest heads
    reach a few hundred keys, so a group of them skips most keys): with the window on, ours-sdpa executes fewer FLOPs
    than it is credited; with it off, exactly as many; fwd+bwd rows 3.5 x the forward. (No
    oracle: the equality of windowed and unwindowed outputs is tests/test_attention_windowing.py's.)"""
    out = tmp_path / "window.json"
    assert main(["attention", "--device", "cpu", "--impls", "ours-sdpa", "--lengths", "4096",
                 "--compositions", "single", "--heads", "12", "--head-dims", "16",
                 "--modes", "fwd", "--min-run-time", "0", "--min-samples", "1",
                 "--window", "both", "--oracle-max-seqlen", "1", "--out", str(out)]) == 0
    rows = {r["window"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {True, False}
    on, off = rows[True], rows[False]
    assert on["flops"] == off["flops"] == attention_flops([4096], 12, 16, "fwd")
    assert off["executed_flops"] == off["flops"]
    assert 0 < on["executed_flops"] < on["flops"]
    assert on["executed_tflops"] < on["tflops"]
    # the same plan serves the backward (not run here: the count needs no call)
    case = attention.Case("single", 4096, (4096,), 12, 16, "float32")
    inp = attention.make_inputs(case, CPU)
    for window, row in rows.items():
        prepared = attention.SETUPS["ours-sdpa"](inp, case, "fwd+bwd",
                                                 attention.Options(device=CPU, window=window))
        assert prepared.executed_flops() == row["executed_flops"] * 7 // 2


def test_attention_smoke_errors_within_tolerance(attention_results):
    _, out = attention_results
    rows = [r for r in json.loads(out.read_text())["rows"] if r["status"] == "ok"]
    assert rows
    for row in rows:
        assert row["max_abs_err"] <= row["tolerance"], row
        if row["mode"] == "fwd+bwd":
            assert row["max_abs_err_grad"] <= row["tolerance_grad"], row
        assert row["within_tolerance"] is True


def test_attention_smoke_csv(attention_results):
    _, out = attention_results
    with open(out.with_suffix(".csv"), newline="") as stream:
        table = list(csv.DictReader(stream))
    assert len(table) == len(json.loads(out.read_text())["rows"])
    assert set(attention.ATTENTION_FIELDS) <= set(table[0])


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1" and not torch.cuda.is_available(),
                    reason="ours-triton needs a GPU or TRITON_INTERPRET=1 (set by conftest)")
def test_triton_executed_flops_with_and_without_window():
    """With lodestone's 12 slopes at 512 tokens the steep heads skip key blocks when windowing is
    forced on: executed FLOPs fall below the credited dense count, by the plan of
    mosaic_kernels.windowing on the kernel pre-pass's reach; off, and on by default (512 tokens
    is below the length where windowing pays, so the kernel switches it off), they are equal.
    The count needs only the block sizes, so on CPU the (slow) interpreted kernel is not
    launched."""
    from mosaic_kernels import flash_attn
    from mosaic_kernels.windowing import executed_forward_flops

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    case = attention.Case("mixed", 512, (512, 200, 7), 12, 16, "float32")
    inp = attention.make_inputs(case, device)
    credited = attention_flops(case.seqlens, 12, 16, "fwd")
    executed = {}
    for window in (True, "always", False):
        opts = attention.Options(device=device, triton_interpret=True, window=window)
        prepared = attention.SETUPS["ours-triton"](inp, case, "fwd", opts)
        if device.type == "cuda":
            prepared.call()  # the autotuner picks the block sizes at the first launch
        executed[window] = prepared.executed_flops()
    assert executed[False] == executed[True] == credited
    blocks = flash_attn.block_sizes("fwd", torch.float32)
    reach = flash_attn.window_reach(inp.q, inp.k, inp.v, inp.slopes, inp.scale)
    assert executed["always"] == executed_forward_flops(reach, inp.cu_seqlens, 12, 16,
                                                        blocks["BLOCK_M"], blocks["BLOCK_N"])
    assert 0 < executed["always"] < credited
    # the backward has no pair-level count: fwd+bwd rows report none
    opts = attention.Options(device=device, triton_interpret=True)
    assert attention.SETUPS["ours-triton"](inp, case, "fwd+bwd", opts).executed_flops is None


def test_unsupported_rows_not_crashes():
    """A dense implementation over its memory budget, and an unknown failure, become rows."""
    case = attention.Case("single", 64, (64,), 2, 16, "float32")
    inp = attention.make_inputs(case, CPU)
    env = {"device": "cpu", "torch": torch.__version__, "triton": None}
    tiny_budget = attention.Options(device=CPU, max_dense_bytes=1024)
    row = attention.measure("naive", case, "fwd", inp, tiny_budget, env, lambda: "skipped",
                        min_run_time=0.0, min_samples=1)
    assert row["status"] == "unsupported" and "--max-dense-gib" in row["reason"]

    bad = attention.Case("single", 64, (64,), 2, 16, "float32")
    broken = attention.make_inputs(bad, CPU)
    broken.cu_seqlens = torch.tensor([0, 999], dtype=torch.int32)  # out of range
    row = attention.measure("ours-sdpa", bad, "fwd", broken, attention.Options(device=CPU), env,
                        lambda: "skipped", min_run_time=0.0, min_samples=1)
    assert row["status"] == "failed" and row["reason"]
