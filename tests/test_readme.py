"""Every ```python block of README.md runs as written, from the repository root, in a fresh
interpreter, as a new user would paste it: ``python -c`` with the ordinary sys.path (the root
first), PYTHONSAFEPATH and PYTHONPATH unset. From the root, ``import mosaic_encoder`` finds the
checkout's own folder, installed copy or not, as it does for the user; .ci/run's pass over a
normal install checks the installed copy through tests/test_package.py."""

import re
import subprocess
import sys

import pytest

from helpers import ROOT, user_environment

BLOCKS = re.findall(r"^```python\n(.*?)^```", (ROOT / "README.md").read_text(encoding="utf-8"),
                    flags=re.MULTILINE | re.DOTALL)


def test_readme_has_python_blocks():
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("number", range(len(BLOCKS)))
def test_readme_python_block_runs(number):
    result = subprocess.run([sys.executable, "-c", BLOCKS[number]], cwd=ROOT, capture_output=True,
                            text=True, env=user_environment())
    assert result.returncode == 0, result.stderr
