"""Every ```python block of README.md runs as written, from the repository root, in a fresh
interpreter, as a new user would paste it.

PYTHONSAFEPATH keeps the repository root off sys.path, so the blocks import the package installed
in the environment under test; in .ci/run's pass over a normal install that is the installed copy,
not the source tree the blocks run in."""

import os
import re
import subprocess
import sys

import pytest

from helpers import ROOT

BLOCKS = re.findall(r"^```python\n(.*?)^```", (ROOT / "README.md").read_text(encoding="utf-8"),
                    flags=re.MULTILINE | re.DOTALL)


def test_readme_has_python_blocks():
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("number", range(len(BLOCKS)))
def test_readme_python_block_runs(number):
    result = subprocess.run([sys.executable, "-c", BLOCKS[number]], cwd=ROOT, capture_output=True,
                            text=True, env=dict(os.environ, PYTHONSAFEPATH="1"))
    assert result.returncode == 0, result.stderr
