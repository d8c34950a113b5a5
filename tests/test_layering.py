"""The package layering: the kernels are a leaf, the benchmark harness sits above the model."""

import ast
import sys

from helpers import ROOT


def imported_modules(path):
    """Top-level names of everything ``path`` imports (relative imports as '.')."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.add("." if node.level else node.module)
    return names


def test_kernels_import_only_torch_triton_and_the_standard_library():
    for path in sorted((ROOT / "kernels").glob("*.py")):
        for name in imported_modules(path):
            top = name.split(".")[0]
            assert name == "." or top in ("torch", "triton") or top in sys.stdlib_module_names, \
                f"{path.name} imports {name}"


def test_the_model_never_imports_the_benchmark_harness():
    for path in sorted((ROOT / "mosaic_encoder").glob("*.py")):
        if path.name == "cli.py":  # the command line dispatches to every subcommand
            continue
        source = path.read_text(encoding="utf-8")
        assert "bench" not in {n.lstrip(".").split(".")[0] for n in imported_modules(path)}, path
        assert "mosaic_encoder.bench" not in source, path


def test_harness_modules_import_no_private_names_of_each_other():
    for path in sorted((ROOT / "mosaic_encoder" / "bench").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level:
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private, f"{path.name} imports {private} from .{node.module}"


def _module_graph():
    """Edges between the project's modules (package-qualified names), lazy imports included,
    type-only imports (under ``if TYPE_CHECKING:``, never run) left out.

    ``mosaic_kernels`` is the installed name of the ``kernels/`` folder. An import of a package
    (``from . import x``) points at the submodule ``x`` when there is one, else at the package.
    """
    roots = {"mosaic_encoder": ROOT / "mosaic_encoder", "mosaic_kernels": ROOT / "kernels"}
    files = {}
    for package, folder in roots.items():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            name = ".".join((package, *parts))
            files[name.removesuffix(".__init__")] = path
    graph = {}
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        edges = set()
        tree = ast.parse(path.read_text(encoding="utf-8"))
        type_only = {id(inner) for node in ast.walk(tree)
                     if isinstance(node, ast.If) and isinstance(node.test, ast.Name)
                     and node.test.id == "TYPE_CHECKING" for inner in ast.walk(node)}
        for node in ast.walk(tree):
            if id(node) in type_only:
                continue
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".")
                    base = base[:len(base) - node.level + (1 if is_package else 0)]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module
                targets = [f"{module}.{alias.name}" if f"{module}.{alias.name}" in files
                           else module for alias in node.names]
            else:
                continue
            edges.update(t for t in targets if t in files and t != name)
        graph[name] = edges
    return graph


def test_no_import_cycle_between_modules():
    graph = _module_graph()
    state = {}

    def visit(name, stack):
        state[name] = "open"
        for target in sorted(graph[name]):
            # A package's __init__ re-exports its submodules: importing the package from inside
            # it (``from . import __version__``) is no cycle as long as __init__ itself does
            # not reach back.
            if name.startswith(target + "."):
                continue
            assert state.get(target) != "open", " -> ".join(stack + [name, target])
            if target not in state:
                visit(target, stack + [name])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [])
