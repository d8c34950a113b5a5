"""Checkpoints held the way the Hugging Face cache holds them, and named by Hub id.

Each test builds a real cache in a temporary ``HF_HUB_CACHE`` (``models--org--name/`` with
``blobs/``, ``refs/`` and ``snapshots/<commit>/`` of symlinks into ``../../blobs/``), and
huggingface_hub's own ``scan_cache_dir`` must list it, so the layout is the real one. The
network is never used: every run sets ``HF_HUB_OFFLINE=1``.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from huggingface_hub import scan_cache_dir

from helpers import TINY
from mosaic_encoder import MosaicError, SentenceEncoder, load_model
from mosaic_encoder.hub import cache_repository, is_hub_id
from mosaic_encoder.verify import file_digests

REPO = "mosaic-test/tiny"
MAIN, V1 = "a" * 40, "b" * 40  # commit hashes of two snapshots


def add_snapshot(repository: Path, commit: str, source: Path, ref: str) -> Path:
    """Store every file of ``source`` as a blob named by its sha256, and snapshot ``commit`` as
    relative symlinks into ``blobs/``, as huggingface_hub's downloads do; ``refs/ref`` names it."""
    snapshot = repository / "snapshots" / commit
    for file in sorted(p for p in source.rglob("*") if p.is_file()):
        data = file.read_bytes()
        blob = repository / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / file.relative_to(source)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repository / "refs").mkdir(exist_ok=True)
    (repository / "refs" / ref).write_text(commit)
    return snapshot


@pytest.fixture
def cache(tmp_path) -> Path:
    """An HF_HUB_CACHE holding REPO: main is the bundled mosaic-tiny, tag v1 the same weights
    with max_seq_length 8."""
    cache = tmp_path / "hub"
    repository = cache / f"models--{REPO.replace('/', '--')}"
    add_snapshot(repository, MAIN, TINY, "main")
    short = tmp_path / "short"
    shutil.copytree(TINY, short)
    (short / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 8}))
    add_snapshot(repository, V1, short, "v1")
    return cache


def offline(cache: Path) -> dict[str, str]:
    return dict(os.environ, HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="1", PYTHONIOENCODING="utf-8")


def cli(cache: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mosaic_encoder.cli", *map(str, args)],
                          capture_output=True, text=True, env=offline(cache), timeout=600)


def one_sentence(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 1 and done.stdout == "", done.stderr
    assert len(done.stderr.splitlines()) == 1 and "Traceback" not in done.stderr
    return done.stderr


def test_the_cache_is_the_real_layout(cache):
    (repository,) = scan_cache_dir(cache).repos
    assert (repository.repo_id, repository.repo_type) == (REPO, "model")
    assert {r.commit_hash: set(r.refs) for r in repository.revisions} == {MAIN: {"main"},
                                                                          V1: {"v1"}}
    snapshot = cache / f"models--{REPO.replace('/', '--')}" / "snapshots" / MAIN
    assert os.readlink(snapshot / "1_Pooling" / "config.json").startswith("../../../blobs/")
    assert cache_repository(snapshot.resolve() / "1_Pooling") == repository.repo_path


def test_a_snapshot_folder_loads_like_a_checkpoint_directory(cache):
    snapshot = cache / f"models--{REPO.replace('/', '--')}" / "snapshots" / MAIN
    texts = ["a first text", "and a second, longer one"]
    np.testing.assert_array_equal(SentenceEncoder(snapshot).encode(texts),
                                  SentenceEncoder(TINY).encode(texts))
    assert load_model(snapshot).config.hidden_size == 192


def test_verify_hashes_what_the_links_point_to(cache):
    snapshot = cache / f"models--{REPO.replace('/', '--')}" / "snapshots" / MAIN
    digests = {d.path: d for d in file_digests(snapshot)}
    expected = {p.relative_to(TINY).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in TINY.rglob("*") if p.is_file()}
    assert {path: d.sha256 for path, d in digests.items()} == expected
    weights = snapshot / "model.safetensors"
    assert digests["model.safetensors"].sha256 == Path(os.path.realpath(weights)).name
    assert digests["model.safetensors"].size == weights.stat().st_size


def test_a_link_out_of_the_repository_folder_is_refused(cache, tmp_path):
    snapshot = cache / f"models--{REPO.replace('/', '--')}" / "snapshots" / MAIN
    outside = tmp_path / "outside.json"
    shutil.copy(TINY / "config.json", outside)
    (snapshot / "config.json").unlink()
    (snapshot / "config.json").symlink_to(os.path.relpath(outside, snapshot))
    with pytest.raises(MosaicError, match="resolves to .*outside.json, outside the Hugging "
                                              "Face cache repository .*models--mosaic-test--tiny"):
        load_model(snapshot)
    with pytest.raises(MosaicError, match="outside the Hugging Face cache repository"):
        file_digests(snapshot)


def test_a_link_to_another_repository_is_refused(cache):
    """Another repository of the same cache is outside this snapshot's models--* folder."""
    other = cache / "models--mosaic-test--other"
    add_snapshot(other, MAIN, TINY, "main")
    snapshot = cache / f"models--{REPO.replace('/', '--')}" / "snapshots" / MAIN
    (snapshot / "tokenizer.json").unlink()
    (snapshot / "tokenizer.json").symlink_to(
        os.path.relpath(other / "snapshots" / MAIN / "tokenizer.json", snapshot))
    with pytest.raises(MosaicError, match="tokenizer file .* outside the Hugging Face cache"):
        SentenceEncoder(snapshot)


def test_encode_an_id_and_a_revision_offline_from_the_cache(cache):
    texts = ["a first text", "a text longer than eight tokens, so cut at revision v1"]
    main = cli(cache, "encode", "--model", REPO, *texts)
    assert main.returncode == 0, main.stderr
    rows = [json.loads(line)["embedding"] for line in main.stdout.splitlines()]
    np.testing.assert_allclose(np.array(rows, dtype=np.float32),
                               SentenceEncoder(TINY).encode(texts), rtol=0, atol=1e-6)
    assert "0 truncated" in main.stderr and "random-weight" not in main.stderr
    tagged = cli(cache, "encode", "--model", REPO, "--revision", "v1", *texts)
    assert tagged.returncode == 0 and "1 truncated" in tagged.stderr, tagged.stderr
    by_commit = cli(cache, "encode", "--model", REPO, "--revision", V1, *texts)
    assert by_commit.stdout == tagged.stdout


def test_verify_an_id_from_the_cache(cache):
    done = cli(cache, "verify", REPO, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["passed"] and report["directory"].endswith(f"snapshots/{MAIN}")
    assert {"path": "1_Pooling/config.json", "size": (TINY / "1_Pooling" / "config.json").stat()
            .st_size, "sha256": hashlib.sha256((TINY / "1_Pooling" / "config.json").read_bytes())
            .hexdigest()} in report["files"]


def test_the_python_api_takes_an_id_and_a_revision(cache):
    code = ("import mosaic_encoder as me; "
            "print(me.load_model('mosaic-test/tiny').config.hidden_size, "
            "me.SentenceEncoder('mosaic-test/tiny').max_seq_length, "
            f"me.SentenceEncoder('mosaic-test/tiny', revision='v1').max_seq_length)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=offline(cache), timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["192", str(json.loads(
        (TINY / "sentence_bert_config.json").read_text())["max_seq_length"]), "8"]


def test_offline_and_not_cached_is_one_sentence_naming_the_id_and_the_cache(cache):
    stderr = one_sentence(cli(cache, "encode", "x", "--model", "mosaic-test/absent"))
    assert f"mosaic-test/absent is neither a local directory nor in the Hugging Face cache " \
           f"{cache}, and HF_HUB_OFFLINE is set" in stderr
    stderr = one_sentence(cli(cache, "verify", REPO, "--revision", "v2"))
    assert f"{REPO} at revision v2 is neither a local directory nor in the Hugging Face " \
           f"cache {cache}" in stderr


def test_without_huggingface_hub_an_id_is_one_sentence(cache):
    code = ("import sys; sys.modules['huggingface_hub'] = None; from mosaic_encoder.cli import "
            "main; sys.exit(main(['encode', 'x', '--model', 'mosaic-test/tiny']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=offline(cache), timeout=600)
    assert "needs huggingface_hub (pip install huggingface_hub)" in one_sentence(done)


def in_process(capsys, *args: str) -> str:
    """The command in this process (no Hub id involved, so no cache to point at): its one
    sentence."""
    from mosaic_encoder.cli import main

    assert main([str(a) for a in args]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1, captured.err
    return captured.err


def test_a_revision_of_a_local_directory_is_one_sentence(capsys):
    stderr = in_process(capsys, "encode", "x", "--model", TINY, "--revision", "v1")
    assert "a revision (v1) applies to Hugging Face Hub ids only" in stderr


@pytest.mark.parametrize("args", [["encode", "x", "--model", "{tiny}/model.safetensors"],
                                  ["verify", "{tiny}/config.json"]])
def test_a_file_where_a_directory_belongs_names_its_folder(capsys, args):
    stderr = in_process(capsys, *[a.format(tiny=TINY) for a in args])
    assert f"is a file, not a checkpoint directory; pass the folder that holds it, {TINY}." \
        in stderr


@pytest.mark.parametrize("value,expected", [
    ("org/name", True), ("Hum-Works/lodestone-base-4096-v1", True), ("a/b.c_d", True),
    ("name", False), ("org/name/extra", False), ("/abs/path", False), ("./x", False),
    ("org/..", False), ("org/a--b", False), ("org/name.", False), (Path("org/name"), False)])
def test_what_reads_as_a_hub_id(value, expected):
    assert is_hub_id(value) is expected
