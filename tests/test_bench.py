"""The benchmark harness (kernels.bench, kernels.bench_model, kernels.plots): FLOP and memory
figures checked on hand-computed cases, and smoke runs at tiny sizes that check the result
schema and every implementation's error. No timing is ever asserted."""

import csv
import json
import math
import os
import subprocess
import sys

import pytest
import torch

from kernels import bench, bench_model
from kernels.flops import attention_flops, padded_pairs, real_pairs, tflops
from kernels.measure import REPO_ROOT, peak_memory

from oracle import attention_oracle as reference_oracle

CPU = torch.device("cpu")
MIB = 2 ** 20


# ------------------------------------------------------------------ FLOPs


def test_flops_hand_computed():
    # Sequences of 3 and 2 tokens: 3*3 + 2*2 = 13 real pairs per head (a padded batch does 18).
    assert real_pairs([3, 2]) == 13
    assert padded_pairs([3, 2]) == 18
    # forward: 2 heads x 13 pairs x (2 products x 2 FLOPs x head_dim 4) = 416
    assert attention_flops([3, 2], heads=2, head_dim=4, mode="fwd") == 416
    # forward + backward = 3.5 x forward
    assert attention_flops([3, 2], heads=2, head_dim=4, mode="fwd+bwd") == 1456
    assert tflops(2 * 10 ** 12, 0.5) == pytest.approx(4.0)
    assert tflops(10, 0.0) is None
    with pytest.raises(ValueError):
        attention_flops([3], 1, 1, mode="bwd")


def test_lodestone_scale_flops():
    # One 4096-token sequence, 12 heads of 64: 4 * 64 * 12 * 4096^2 = 51.54 GFLOP forward.
    assert attention_flops([4096], 12, 64) == 4 * 64 * 12 * 4096 ** 2 == 51_539_607_552


def test_compositions():
    assert bench.composition_seqlens("single", 300, 4096) == [300]
    assert bench.composition_seqlens("equal", 1024, 4096) == [1024] * 4
    assert bench.composition_seqlens("equal", 4096, 4096) == [4096] * 2
    mixed = bench.composition_seqlens("mixed", 512, 4096, seed=3)
    assert max(mixed) == 512 and sum(mixed) == 4096 and len(mixed) > 2
    assert min(mixed) >= 1
    assert mixed == bench.composition_seqlens("mixed", 512, 4096, seed=3)  # deterministic


# ------------------------------------------------------------------ memory


def test_peak_memory_hand_computed():
    def allocate():
        a = torch.empty(MIB // 4)          # 1 MiB
        b = torch.empty(2 * MIB // 4)      # 2 MiB, 3 MiB live
        del a                              # 2 MiB live
        c = torch.empty(3 * MIB // 4)      # 3 MiB more: 5 MiB live, the peak
        return b, c

    kept = torch.empty(4 * MIB // 4)  # allocated before the call: not counted
    result, peak, method = peak_memory(allocate, CPU)
    assert "profiler" in method
    assert 5 * MIB <= peak <= 5 * MIB + 4096
    assert [t.numel() * 4 for t in result] == [2 * MIB, 3 * MIB]
    del kept


@pytest.mark.parametrize("seqlen,heads,head_dim", [(256, 2, 16), (384, 3, 32)])
def test_naive_memory_hand_computed(seqlen, heads, head_dim):
    """Upstream-style attention keeps three (B, heads, S, S) float32 tensors alive at once (the
    bias, the pre-softmax scores and the probabilities) when it allocates the output."""
    case = bench.Case("single", seqlen, (seqlen,), heads, head_dim, "float32")
    inp = bench.make_inputs(case, CPU)
    opts = bench.Options(device=CPU, alibi_starting_size=1)
    prepared = bench._setup_naive(inp, case, "fwd", opts)
    prepared.call()
    _, peak, _ = peak_memory(prepared.call, CPU)
    scores = heads * seqlen * seqlen * 4
    output = seqlen * heads * head_dim * 4
    key_mask = seqlen * 4  # the (B, 1, 1, S) float32 -10000 mask
    expected = 3 * scores + output + key_mask
    assert expected <= peak <= expected + 64 * 1024
    assert prepared.state_bytes == heads * seqlen * seqlen * 4  # the (heads, N, N) ALiBi table


def test_peak_rss_of_a_child_process_hand_computed():
    """ru_maxrss of a fresh process rises to its RSS plus a tensor allocated (and touched) in it.

    The block is sized to end 256 MiB above the process's earlier high-water mark, which imports
    can leave well above the current RSS (a fresh virtual environment compiles bytecode).
    """
    code = (
        "import json, torch\n"
        "from kernels.measure import current_rss_bytes, max_rss_bytes\n"
        "before = current_rss_bytes()\n"
        "size = (max(max_rss_bytes() - before, 0) + 256 * 2**20) // 4 * 4\n"
        "block = torch.ones(size // 4)\n"
        "print(json.dumps([before, size, max_rss_bytes()]))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True,
                          text=True, check=True, timeout=120)
    before, size, peak = json.loads(done.stdout.strip().splitlines()[-1])
    assert size <= peak - before <= size + 48 * MIB


# ------------------------------------------------------------------ oracle


def test_oracle_matches_autograd():
    torch.manual_seed(0)
    cu = torch.tensor([0, 5, 12], dtype=torch.int32)
    q, k, v, dout = (torch.randn(12, 3, 8, dtype=torch.float64) for _ in range(4))
    from mosaic_encoder.alibi import alibi_slopes

    slopes = alibi_slopes(3)
    out, dq, dk, dv = bench.attention_oracle(q, k, v, cu, slopes, 1 / math.sqrt(8), dout)
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    expected = reference_oracle(*leaves, cu, slopes)
    torch.testing.assert_close(out, expected.detach())
    grads = torch.autograd.grad(expected, leaves, dout)
    for got, want in zip((dq, dk, dv), grads):
        torch.testing.assert_close(got, want)


# ------------------------------------------------------------------ smoke runs

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
    status = bench.main(argv)
    return status, out


def test_attention_smoke_schema(attention_results):
    status, out = attention_results
    assert status == 0
    document = json.loads(out.read_text())
    assert document["schema"] == bench.SCHEMA and document["kind"] == "attention"
    assert document["command"].startswith("python -m kernels.bench ")
    for key in ("torch", "triton", "python", "device", "cpu", "git_commit"):
        assert key in document["environment"]
    assert "3.5" in document["conventions"]["flops"]
    rows = document["rows"]
    # every implementation x 2 compositions x 2 modes, each a row whatever happened
    assert len(rows) == len(bench.IMPLS) * 2 * 2
    assert {r["impl"] for r in rows} == set(bench.IMPLS)
    for row in rows:
        assert set(row) == set(bench.ATTENTION_FIELDS)
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
    assert by["flex", "fwd+bwd", "single"]["status"] == "unsupported"  # no backward on CPU
    # padded implementations are credited the same (real) work as packed ones
    assert by["naive", "fwd", "mixed"]["flops"] == by["ours-sdpa", "fwd", "mixed"]["flops"]
    assert by["naive", "fwd", "mixed"]["padded_pairs"] > by["naive", "fwd", "mixed"]["real_pairs"]


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
    assert set(bench.ATTENTION_FIELDS) <= set(table[0])


def test_unsupported_rows_not_crashes():
    """A dense implementation over its memory budget, and an unknown failure, become rows."""
    case = bench.Case("single", 64, (64,), 2, 16, "float32")
    inp = bench.make_inputs(case, CPU)
    env = {"device": "cpu", "torch": torch.__version__, "triton": None}
    tiny_budget = bench.Options(device=CPU, max_dense_bytes=1024)
    row = bench.measure("naive", case, "fwd", inp, tiny_budget, env, lambda: "skipped",
                        min_run_time=0.0, min_samples=1)
    assert row["status"] == "unsupported" and "--max-dense-gib" in row["reason"]

    bad = bench.Case("single", 64, (64,), 2, 16, "float32")
    broken = bench.make_inputs(bad, CPU)
    broken.cu_seqlens = torch.tensor([0, 999], dtype=torch.int32)  # out of range
    row = bench.measure("ours-sdpa", bad, "fwd", broken, bench.Options(device=CPU), env,
                        lambda: "skipped", min_run_time=0.0, min_samples=1)
    assert row["status"] == "failed" and row["reason"]


def test_model_smoke(tmp_path):
    out = tmp_path / "model.json"
    status = bench.main(["model", "--device", "cpu", "--hidden", "32", "--layers", "2",
                         "--heads", "4", "--intermediate", "64", "--vocab", "1200",
                         "--lengths", "24,40", "--corpus-docs", "6", "--corpus-max-len", "48",
                         "--corpus-batch-size", "4", "--min-samples", "1", "--out", str(out)])
    assert status == 0
    document = json.loads(out.read_text())
    assert document["kind"] == "model" and document["command"].startswith(
        "python -m kernels.bench model")
    rows = document["rows"]
    assert [(r["impl"], r["case"], r["seqlen"]) for r in rows] == [
        ("ours-sdpa", "single", 24), ("baseline", "single", 24),
        ("ours-sdpa", "single", 40), ("baseline", "single", 40),
        ("ours-sdpa", "corpus", max(r["seqlen"] for r in rows if r["case"] == "corpus")),
        ("baseline", "corpus", max(r["seqlen"] for r in rows if r["case"] == "corpus"))]
    for row in rows:
        assert set(row) == set(bench_model.MODEL_FIELDS)
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
    status = bench.main(["model", "--device", "cpu", "--hidden", "32", "--layers", "1",
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


# ------------------------------------------------------------------ plots


def test_plots(attention_results, tmp_path):
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    from kernels import plots

    _, out = attention_results
    results = plots.load_results(out)
    for metric in plots.METRICS:
        assert isinstance(plots.attention_figure(results, metric, mode="fwd"), Figure)
    written = plots.save_figures(results, tmp_path / "png")
    assert written and all(p.suffix == ".png" and p.stat().st_size > 1000 for p in written)
    assert plots.main([str(out), "--out", str(tmp_path / "cli")]) == 0
    assert list((tmp_path / "cli").glob("*.png"))
