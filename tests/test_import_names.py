"""No folder or module of the checkout, nor of tests/, hides an installed distribution's import
name, whatever the current directory.

A name *shadows* when Python would import the checkout's file instead of the installed one: a
module file (``name.py``) or a regular package (a folder with ``__init__.py``) in a directory on
``sys.path``. A folder without ``__init__.py`` (``kernels/``, ``tests/kernels/``) is only a
namespace portion: a regular package found later on ``sys.path`` wins over it, so it never
shadows. The directories that land on ``sys.path`` are the checkout root (``python -c``,
``python -m``, a notebook started there) and, under pytest's default import mode, every test
folder without ``__init__.py`` (``tests/`` itself and its sub-folders that have none).
"""

import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from helpers import ROOT, user_environment

OWN_DISTRIBUTION = "mosaic-encoder"


def _installed_import_names() -> dict[str, list[str]]:
    """{top-level import name: [distribution, ...]} of every installed distribution but ours."""
    return {name: distributions
            for name, distributions in importlib.metadata.packages_distributions().items()
            if OWN_DISTRIBUTION not in distributions}


def _path_directories() -> list[Path]:
    """The checkout's directories that land on sys.path: the root and the test folders pytest
    inserts (those without ``__init__.py``)."""
    tests = [folder for folder in [ROOT / "tests", *(ROOT / "tests").rglob("*")]
             if folder.is_dir() and not (folder / "__init__.py").exists()
             and "__pycache__" not in folder.parts and any(folder.glob("test_*.py"))]
    return [ROOT, *tests]


def _shadowing_names(directory: Path) -> set[str]:
    """Import names that ``directory`` on sys.path would resolve before any installed package."""
    names = set()
    for entry in directory.iterdir():
        if entry.is_file() and entry.suffix == ".py":
            names.add(entry.stem)
        elif entry.is_dir() and (entry / "__init__.py").is_file():
            names.add(entry.name)
    return names


def test_no_checkout_name_equals_an_installed_import_name():
    installed = _installed_import_names()
    clashes = {f"{directory.relative_to(ROOT.parent)}/{name}": installed[name]
               for directory in _path_directories()
               for name in sorted(_shadowing_names(directory) & installed.keys())}
    assert clashes == {}, f"checkout names that hide installed distributions: {clashes}"


def test_installed_names_resolve_the_same_from_the_checkout_root():
    """Every installed import name resolves, from the checkout root with the test folders on
    sys.path (as ``python -m pytest`` has it), to the same file as from an empty directory."""
    program = textwrap.dedent("""
        import importlib.util, json, sys
        found = {}
        for name in json.loads(sys.argv[1]):
            try:
                spec = importlib.util.find_spec(name)
            except (ImportError, ValueError):
                continue
            if spec is not None:
                found[name] = [spec.origin, list(spec.submodule_search_locations or [])]
        print(json.dumps(found))
    """)
    names = json.dumps(sorted(_installed_import_names()))

    def resolve(cwd: Path, python_path: list[Path]) -> dict:
        env = user_environment(PYTHONPATH=os.pathsep.join(map(str, python_path)))
        done = subprocess.run([sys.executable, "-c", program, names], cwd=cwd, env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    empty = ROOT / "tests" / "data" / "expected"   # a folder with no Python in it
    from_root = resolve(ROOT, _path_directories()[1:])
    from_elsewhere = resolve(empty, [])
    assert from_root.keys() == from_elsewhere.keys()
    differing = {name: (from_root[name], from_elsewhere[name]) for name in from_root
                 if from_root[name][0] != from_elsewhere[name][0]}
    assert differing == {}


def _inside_checkout(path: str) -> bool:
    """Whether ``path`` is a file of the checkout (a virtual environment inside it, as .ci/run
    makes, is not)."""
    resolved = Path(path).resolve()
    return ROOT in resolved.parents and Path(sys.prefix).resolve() not in resolved.parents


def test_transformers_imports_its_kernels_from_the_checkout_root():
    """transformers imports the PyPI ``kernels``; from the root, the checkout's ``kernels/``
    must not stand in for it."""
    code = ("import sentence_transformers, transformers.integrations.hub_kernels, sys; "
            "print(sys.modules['kernels'].__file__)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=user_environment(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert not _inside_checkout(done.stdout.strip())


def test_pytests_own_sys_path_resolves_installed_names_outside_the_checkout():
    inside = {}
    for name in sorted(_installed_import_names()):
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            continue
        if spec is not None and spec.origin and _inside_checkout(spec.origin):
            inside[name] = spec.origin
    assert inside == {}
