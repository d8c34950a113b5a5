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
