"""Every command in docs/*.md runs as written, from the repository root, as a reader would paste it.

Per page, in document order: each ```bash block runs under ``bash -euo pipefail``, each ```python
block in a fresh interpreter. The blocks of one page share /tmp/mosaic-docs/, created empty for the
page, so a later block may read what an earlier one wrote. ```console blocks (real downloaded
weights, a GPU, the network) and ```text blocks (printed output) are not run.

/tmp/mosaic-docs/ is the path the pages show, so it cannot be made unique per run; an exclusive
lock on /tmp/mosaic-docs.lock keeps concurrent runs (other checkouts, pytest-xdist workers) from
sharing it. Blocks run as a user pastes them (helpers.user_environment): from the root, with the
ordinary sys.path, the interpreter running the tests first on PATH so that ``python`` and
``mosaic-encoder`` in a block are those of the environment under test.
"""

import fcntl
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import ROOT, user_environment

WORKDIR = Path("/tmp/mosaic-docs")
LOCK = Path("/tmp/mosaic-docs.lock")
BLOCK = re.compile(r"^```(bash|python)\n(.*?)^```", flags=re.MULTILINE | re.DOTALL)
PAGES = sorted((ROOT / "docs").glob("*.md"))


def blocks(page: Path) -> list[tuple[str, str]]:
    """(language, code) of the runnable blocks of ``page``, in document order."""
    return BLOCK.findall(page.read_text(encoding="utf-8"))


def command(language: str, code: str) -> list[str]:
    if language == "bash":
        return ["bash", "-euo", "pipefail", "-c", code]
    return [sys.executable, "-c", code]


def test_docs_has_pages():
    assert len(PAGES) >= 5


def test_readme_links_every_page():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert [page.name for page in PAGES if f"(docs/{page.name})" not in readme] == []


@pytest.mark.parametrize("page", PAGES, ids=[page.name for page in PAGES])
def test_doc_page_runs(page):
    environment = user_environment()
    with LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        shutil.rmtree(WORKDIR, ignore_errors=True)
        WORKDIR.mkdir()
        for number, (language, code) in enumerate(blocks(page), start=1):
            result = subprocess.run(command(language, code), cwd=ROOT, env=environment,
                                    capture_output=True, text=True)
            assert result.returncode == 0, (f"{page.name}, runnable block {number} ({language}):\n"
                                            f"{code}\nstdout:\n{result.stdout}\n"
                                            f"stderr:\n{result.stderr}")
