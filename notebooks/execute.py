"""Re-execute the notebooks in place so their committed outputs are current.

Usage: python notebooks/execute.py [NOTEBOOK ...]   (default: every notebook here)
"""

import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient


def main(paths: list[str]) -> int:
    here = Path(__file__).resolve().parent
    for path in [Path(p) for p in paths] or sorted(here.glob("*.ipynb")):
        notebook = nbformat.read(path, as_version=4)
        NotebookClient(notebook, timeout=600, kernel_name="python3",
                       resources={"metadata": {"path": str(path.resolve().parent)}}).execute()
        nbformat.write(notebook, path)
        print(f"executed {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
