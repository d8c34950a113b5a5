"""benchmarks/gpu/run.sh, the one time-boxed script a lent GPU runs: its plan fits its budget.

``DRY_RUN=1`` runs nothing: it prints every step with its limit and prices each step's first-call
kernel compiles with the recorded offline compile report, failing when a limit does not cover them
or when the shared budget leaves a step no time. A GPU session has minutes in all, so the plan is
checked here, where it costs nothing."""

import os
import subprocess

from helpers import ROOT

SCRIPT = ROOT / "benchmarks" / "gpu" / "run.sh"


def dry_run(tmp_path, **settings: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DRY_RUN": "1", "OUT": str(tmp_path), **settings}
    return subprocess.run(["bash", str(SCRIPT)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


def test_every_step_fits_the_default_budget_with_its_compiles(tmp_path):
    done = dry_run(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "skipped" not in done.stdout
    priced = [line for line in done.stdout.splitlines() if line.startswith("ok ")]
    assert len(priced) >= 9, done.stdout


def test_a_budget_too_small_for_every_step_fails_the_dry_run(tmp_path):
    done = dry_run(tmp_path, T_TOTAL="400")
    assert done.returncode == 1
    assert "leaves no time for" in done.stdout
