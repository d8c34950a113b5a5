"""The package as a user imports and installs it: version, public names, entry points, package
data. .ci/run runs this module again against a non-editable install, from outside the repository."""

import importlib
import importlib.metadata
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import mosaic_encoder as me
from mosaic_encoder import cli
from mosaic_encoder.bundled import BUNDLED_CHECKPOINT, BUNDLED_MLM_CHECKPOINT, WEIGHTS_DIR
from mosaic_encoder.manifest import PUBLISHED, load_manifest


def test_version_is_the_installed_distributions():
    assert me.__version__ == importlib.metadata.version("mosaic-encoder")


def test_version_option(capsys):
    try:
        cli.main(["--version"])
    except SystemExit as done:
        assert done.code == 0
    assert capsys.readouterr().out.strip() == f"mosaic-encoder {me.__version__}"


def test_public_names_without_optional_dependencies():
    """SentenceEncoder, verify and convert come with the package; sentence-transformers, ray and
    huggingface_hub (optional extras) are not imported."""
    code = ("import sys, mosaic_encoder as me; "
            "me.SentenceEncoder, me.verify.verify_checkpoint, me.convert.convert_checkpoint; "
            "from mosaic_encoder.bundled import BUNDLED_CHECKPOINT; "
            "me.SentenceEncoder(BUNDLED_CHECKPOINT).encode(['a text']); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('sentence_transformers', 'ray', 'huggingface_hub')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_bundled_checkpoints_are_found():
    """In a source checkout they are weights/; in an installed wheel, package data."""
    for directory in (BUNDLED_CHECKPOINT, BUNDLED_MLM_CHECKPOINT):
        assert (directory / "config.json").is_file() and (directory / "model.safetensors").is_file()
    assert BUNDLED_CHECKPOINT.parent == WEIGHTS_DIR
    assert (BUNDLED_CHECKPOINT / "1_Pooling" / "config.json").is_file()


def test_console_script_and_module_entry_points():
    script = shutil.which("mosaic-encoder", path=str(Path(sys.executable).parent))
    assert script, f"no mosaic-encoder script beside {sys.executable}"
    for command in ([script], [sys.executable, "-m", "mosaic_encoder"]):
        done = subprocess.run([*command, "--version"], capture_output=True, text=True)
        assert done.returncode == 0 and done.stdout.strip() == f"mosaic-encoder {me.__version__}"


@pytest.mark.parametrize("name", PUBLISHED)
def test_published_manifests_are_package_data(name):
    assert load_manifest(name)["tensors"]


@pytest.mark.parametrize("module", ["mosaic_kernels.reference", "mosaic_kernels.windowing",
                                    "mosaic_kernels.flash_attn", "mosaic_kernels.custom_op"])
def test_kernels_install_under_their_import_name(module):
    assert importlib.import_module(module).__file__


def test_kernels_are_a_namespace_package():
    """kernels/ has no __init__.py (kernels/README.md): installed or editable, mosaic_kernels is
    a namespace package, and the top-level name kernels is never the checkout's folder."""
    import mosaic_kernels
    assert mosaic_kernels.__file__ is None
    assert any((Path(folder) / "flash_attn.py").is_file() for folder in mosaic_kernels.__path__)


def test_every_subpackage_is_importable_from_the_install():
    """Every folder of the package with an ``__init__.py`` is installed (setup.cfg lists packages
    by name: a new subpackage left out works in the checkout and breaks the install)."""
    root = Path(me.__file__).parent
    for init in sorted(root.rglob("__init__.py")):
        name = ".".join(("mosaic_encoder",) + init.parent.relative_to(root).parts)
        importlib.import_module(name)
    installed = {p.parent.name for p in root.rglob("__init__.py")}
    assert {"bench", "corpus", "pretraining", "training"} <= installed
