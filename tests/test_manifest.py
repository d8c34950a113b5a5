"""Published manifests by name, and manifest files given to ``verify --against``."""

import os

import pytest

from mosaic_encoder.errors import CheckpointError
from mosaic_encoder.manifest import PUBLISHED, load_manifest


def test_published_manifests_load_by_name():
    for name in PUBLISHED:
        assert load_manifest(name)["tensors"]


@pytest.mark.parametrize("make, message", [
    (lambda path: os.symlink("/dev/zero", path), "is not a regular file"),
    (os.mkfifo, "is not a regular file"),
    (lambda path: path.write_text('{"tensors": {}, "n": ' + "9" * 5000 + "}"),
     "holds a number too large to read"),
    (lambda path: path.write_text("[" * 100_000 + "]" * 100_000), "nests JSON values too deeply"),
    (lambda path: path.write_text("[]"), "has no 'tensors' mapping"),
    (lambda path: None, "does not exist (known names: lodestone-base-4096-v1"),
])
def test_a_bad_manifest_file_is_one_sentence_without_blocking(tmp_path, make, message):
    path = tmp_path / "manifest.json"
    make(path)
    with pytest.raises(CheckpointError, match=message.replace("(", "\\(")) as info:
        load_manifest(path)
    assert "\n" not in str(info.value) and len(str(info.value)) < 300
