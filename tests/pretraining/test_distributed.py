"""torchrun with two CPU processes on gloo pretrains exactly like one process, dropout off."""

import json
import subprocess
import sys

from safetensors.torch import load_file

from mosaic_encoder.pretraining.config import PretrainConfig
from mosaic_encoder.pretraining.run import pretrain

from helpers import assert_same_trained_weights

from .conftest import write_corpus


def test_two_gloo_processes_equal_one(tmp_path, tiny_mlm):
    """Two corpus files, gradient accumulation, a checkpoint in the middle: every process builds
    the same masked global batch and takes its half."""
    data = [write_corpus(tmp_path / "a.txt", 60), write_corpus(tmp_path / "b.txt", 30, seed=4)]
    settings = dict(batch_size=8, max_seq_length=32, steps=4, save_every=2, learning_rate=1e-3,
                    seed=3, accumulation=2)
    single = pretrain(PretrainConfig(model=tiny_mlm, data=tuple(data), output=tmp_path / "one",
                                     progress=False, **settings))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
               "2", "-m", "mosaic_encoder", "pretrain", "--model", str(tiny_mlm),
               "--data", *map(str, data), "--output", str(tmp_path / "two"), "--no-progress",
               "--batch-size", "8", "--max-seq-length", "32", "--steps", "4", "--save-every",
               "2", "--lr", "1e-3", "--seed", "3", "--accumulation", "2"]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr[-3000:]
    log = [json.loads(line) for line in (tmp_path / "two" / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r]
    assert len(losses) == 4
    for expected, actual in zip([r["loss"] for r in single.records], losses):
        assert abs(actual - expected) <= 1e-5 * abs(expected)
    one = load_file(tmp_path / "one" / "model.safetensors")
    two = load_file(tmp_path / "two" / "model.safetensors")
    assert_same_trained_weights(two, one, rtol=1e-5, atol=1e-6)
