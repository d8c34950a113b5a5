"""Published tensor manifests of lodestone-base-4096-v1 and mosaic-bert-base-seqlen-2048.

Each manifest (shipped in ``manifests/``) lists the checkpoint's tensor names, shapes and storage
dtypes, its config.json values and its parameter count.
"""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import CheckpointError
from .files import read_json, short
from .inputs import json_type

PUBLISHED = ("lodestone-base-4096-v1", "mosaic-bert-base-seqlen-2048")


def load_manifest(name_or_path: str | Path) -> dict[str, Any]:
    """A shipped manifest by checkpoint name, or a manifest JSON file by path."""
    if str(name_or_path) in PUBLISHED:
        text = resources.files(__package__).joinpath("manifests", f"{name_or_path}.json").read_text(
            encoding="utf-8")
        return json.loads(text)
    path = Path(name_or_path)
    if not os.path.lexists(path):
        raise CheckpointError(f"manifest {path} does not exist (known names: "
                              f"{', '.join(PUBLISHED)}).")
    manifest = read_json(path, "manifest")
    if not isinstance(manifest, dict) or not isinstance(manifest.get("tensors"), dict):
        raise CheckpointError(f"manifest {path} has no 'tensors' mapping.")
    for name, entry in manifest["tensors"].items():
        problem = _entry_problem(entry)
        if problem:
            raise CheckpointError(f"manifest {path}: tensor {short(name)} {problem}.")
    if not isinstance(manifest.get("config", {}), dict):
        raise CheckpointError(f"manifest {path}: config must be a JSON object, not "
                              f"{json_type(manifest['config'])}.")
    return manifest


def _entry_problem(entry: Any) -> str | None:
    """What is wrong with one manifest tensor entry (``{"shape": [...], "dtype": "BF16"}``)."""
    if not isinstance(entry, dict):
        return f"must be a JSON object, not {json_type(entry)}"
    shape = entry.get("shape")
    if not isinstance(shape, list) or not all(
            isinstance(size, int) and not isinstance(size, bool) and size >= 0 for size in shape):
        return f"has shape {short(shape)}, not a list of sizes"
    if not isinstance(entry.get("dtype", ""), str):
        return f"has dtype {short(entry['dtype'])}, not a name such as BF16"
    return None
