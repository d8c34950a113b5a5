"""Every command in docs/*.md runs as written, from the repository root, as a reader would paste it,
and prints what the page says it prints.

Per page, in document order: each ```bash block runs under ``bash -euo pipefail``, each ```python
block in a fresh interpreter. The blocks of one page share /tmp/mosaic-docs/, which the test
removes before the page and the page creates itself (``mkdir -p``), as a reader's fresh shell
needs, so a later block may read what an earlier one wrote. An ```output block is what the
runnable block before it prints, stdout and stderr as a terminal interleaves them, checked
exactly, except that each ``…`` stands for any text within its line (timings, digits that differ
between CPUs). ```text blocks are illustrative and the page says so; ```console blocks (real
downloaded weights, a GPU, the network) are not run.

/tmp/mosaic-docs/ is the path the pages show, so it cannot be made unique per run; an exclusive
lock on /tmp/mosaic-docs.lock keeps concurrent runs (other checkouts, pytest-xdist workers) from
sharing it. Blocks run as a user pastes them (helpers.user_environment): from the root, with the
ordinary sys.path, the interpreter running the tests first on PATH so that ``python`` and
``mosaic-encoder`` in a block are those of the environment under test; PYTHONUNBUFFERED keeps
stdout and stderr in the order they are written.
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
BLOCK = re.compile(r"^```(bash|python|output)\n(.*?)^```", flags=re.MULTILINE | re.DOTALL)
PAGES = sorted((ROOT / "docs").glob("*.md"))
ELIDED = "…"


def blocks(page: Path) -> list[tuple[str, str]]:
    """(language, code) of the runnable and output blocks of ``page``, in document order."""
    return BLOCK.findall(page.read_text(encoding="utf-8"))


def printed_as_shown(printed: str, shown: str) -> bool:
    """Whether ``printed`` is the ```output block ``shown``: equal line by line (trailing spaces
    and blank lines at the end aside), each ``…`` matching any text within its line."""
    pattern = "[^\n]*?".join(re.escape(part) for part in shown.rstrip().split(ELIDED))
    lines = "\n".join(line.rstrip() for line in printed.rstrip().splitlines())
    return re.fullmatch(pattern, lines) is not None


def command(language: str, code: str) -> list[str]:
    if language == "bash":
        return ["bash", "-euo", "pipefail", "-c", code]
    return [sys.executable, "-c", code]


def test_docs_has_pages():
    assert len(PAGES) >= 5


def test_readme_links_every_page():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert [page.name for page in PAGES if f"(docs/{page.name})" not in readme] == []


def test_every_output_block_follows_a_runnable_block():
    for page in PAGES:
        languages = [language for language, _ in blocks(page)]
        assert all(before != "output" for before, now in zip(["output"] + languages, languages)
                   if now == "output"), f"{page.name}: an output block without a command before it"


@pytest.mark.parametrize("printed,shown,same", [
    ("a 12.3 s\nb\n", "a … s\nb", True), ("a 1\n", "a 2", False), ("a\nb 1\n", "a…1", False),
    ("x  \n\n", "x", True)])
def test_elisions_match_within_a_line(printed, shown, same):
    assert printed_as_shown(printed, shown) is same


@pytest.mark.parametrize("page", PAGES, ids=[page.name for page in PAGES])
def test_doc_page_runs_and_prints_what_it_shows(page):
    environment = user_environment(PYTHONUNBUFFERED="1")
    with LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        shutil.rmtree(WORKDIR, ignore_errors=True)
        printed, code = "", ""
        for number, (language, text) in enumerate(blocks(page), start=1):
            if language == "output":
                assert printed_as_shown(printed, text), (
                    f"{page.name}, block {number}: the block before it\n{code}\nprinted\n"
                    f"{printed}\nnot what the page shows\n{text}")
                continue
            code = text
            result = subprocess.run(command(language, code), cwd=ROOT, env=environment,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            printed = result.stdout
            assert result.returncode == 0, (f"{page.name}, runnable block {number} ({language}):\n"
                                            f"{code}\noutput:\n{printed}")
