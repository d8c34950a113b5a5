"""The offline compile report (``python -m mosaic_encoder.bench compile``): the SASS reading, the
compile-time estimate, and the real compile of the default bf16 head-dim-64 configs for sm_90."""

import json
import os
import subprocess
import sys

import pytest

from mosaic_encoder.bench import compile as report

_SASS = """
        /*0000*/                   MOV R1, c[0x0][0x28] ;
        /*0010*/                   STL [R1], R2 ;
.L_x_0:
        /*0020*/                   HGMMA.64x128x16.F32.BF16 R24, gdesc[UR4], RZ, !UPT ;
        /*0030*/                   FFMA R3, R24, R5, R6 ;
        /*0040*/                   LDL R7, [R1+0x4] ;
        /*0050*/               @P0 BRA `(.L_x_0) ;
        /*0060*/                   LDL R2, [R1] ;
.L_x_1:
        /*0070*/                   IADD3 R4, R4, 0x1, RZ ;
        /*0080*/               @P1 BRA `(.L_x_1) ;
.L_x_2:
        /*0090*/                   BRA `(.L_x_2) ;
"""


def test_analyse_sass_finds_the_product_loop_and_its_spills():
    """A loop is a backward branch; the main one holds a product; local loads and stores count
    inside and outside it (a loop without products, and the final trap, are not main loops)."""
    facts = report.analyse_sass(_SASS)
    assert facts == dict(wgmma=True, loop_instructions=4, spills_in_loop=1, spills_outside=2)


def test_a_kernel_without_products_reports_its_own_loop():
    """The small kernels have no products: their smallest loop is the main one, still not the
    final trap (a branch to itself)."""
    without = "\n".join(line for line in _SASS.splitlines() if "HGMMA" not in line
                        and "FFMA" not in line)
    facts = report.analyse_sass(without)
    assert facts == dict(wgmma=False, loop_instructions=2, spills_in_loop=1, spills_outside=2)


def test_estimate_prices_what_was_not_compiled_before():
    rows = [dict(kind="fwd", dtype="bf16", head_dim=64, seconds=10.0),
            dict(kind="fwd", dtype="bf16", head_dim=64, seconds=5.0),
            dict(kind="fwd", dtype="bf16", head_dim=128, seconds=40.0),
            dict(kind="dq", dtype="bf16", head_dim=64, seconds=7.0)]
    document = dict(rows=rows)
    both = report.parse_compiles("fwd,dq:bf16:64:both")
    assert report.estimate_seconds(document, both, set()) == (2 * (15.0 + 7.0), set())
    assert report.estimate_seconds(document, both, report.parse_compiles("fwd:bf16:64:on")) \
        == (15.0 + 2 * 7.0, set())
    assert report.estimate_seconds(document, report.parse_compiles("fwd:bf16:40,80:on"),
                                   set()) == (15.0 + 40.0, set())
    assert report.estimate_seconds(document, report.parse_compiles("dq:bf16:128:on"), set()) \
        == (0.0, {("dq", "bf16", 128)})
    assert report.estimate_seconds(document, report.parse_compiles("dq:fp16:64:on"), set()) \
        == (7.0, set())  # no fp16 rows: priced as bf16
    with pytest.raises(report.CompileError, match="KINDS:DTYPES"):
        report.parse_compiles("fwd:bf16:64")
    steps = ["tests 60 fwd:bf16:64:both", "again 20 fwd:bf16:64:on", "big 50 fwd:bf16:128:on"]
    assert report.check_steps(document, steps, 15.0) == [
        ("tests", 60.0, 30.0, set(), True), ("again", 20.0, 0.0, set(), True),
        ("big", 50.0, 40.0, set(), False)]


def test_bad_target_is_one_sentence():
    result = subprocess.run([sys.executable, "-m", "mosaic_encoder.bench", "compile", "--target",
                             "sm_75"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.startswith("error: --target must be one of") and "Traceback" not in \
        result.stderr


def test_default_bf16_d64_configs_use_wgmma_without_loop_spills():
    """The CI check of the kernels' Hopper code, without a GPU: the first config each kernel
    keeps at bf16, head dim 64, compiled for sm_90 by the installed Triton and ptxas."""
    env = {name: value for name, value in os.environ.items() if name != "TRITON_INTERPRET"}
    result = subprocess.run(
        [sys.executable, "-m", "mosaic_encoder.bench", "compile", "--target", "sm_90",
         "--dtypes", "bf16", "--head-dims", "64", "--first-config", "--json"],
        capture_output=True, text=True, timeout=900, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads(result.stdout)["rows"]
    assert sorted(row["kind"] for row in rows) == sorted(report.ALL_KINDS)
    for row in rows:
        assert not row["error"] and row["registers"] > 0, row
        if row["kind"] in report.KINDS:
            assert row["wgmma"] and row["spills_in_loop"] == 0 and row["loop_instructions"] > 0
        else:  # the small kernels around them: no local memory at all
            assert row["spills_in_loop"] == row["spills_outside"] == 0, row
    span = next(row for row in rows if row["kind"] == "span")
    assert span["loop_instructions"] > 0  # its loop over the query chunks, found without products
    forward = next(row for row in rows if row["kind"] == "fwd")
    assert forward["loop_instructions"] <= 560, forward
