"""torchrun with two CPU processes on gloo trains exactly like one process with the whole batch."""

import json
import subprocess
import sys

from safetensors.torch import load_file

from mosaic_encoder.training.config import TrainConfig
from mosaic_encoder.training.contrastive import train

from helpers import assert_same_trained_weights, pairs, write_jsonl


def test_two_gloo_processes_equal_one(tmp_path, tiny_no_dropout):
    """Triplets and the gradient cache included: hard negatives are gathered like positives, and
    the cache's chunk backward passes run under DDP's no_sync."""
    data = [write_jsonl(tmp_path / "a.jsonl", pairs(24, "a ", negatives=True)),
            write_jsonl(tmp_path / "b.jsonl", pairs(16, "b "))]
    held_out = write_jsonl(tmp_path / "held.jsonl", pairs(6, "h "))
    settings = dict(batch_size=8, max_seq_length=32, steps=4, warmup_steps=1, save_every=2,
                    learning_rate=2e-5, seed=3)
    single = train(TrainConfig(model=tiny_no_dropout, data=tuple(data), output=tmp_path / "one",
                               eval_data=held_out, progress=False, **settings))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
               "2", "-m", "mosaic_encoder", "train", "--model", str(tiny_no_dropout),
               "--data", *map(str, data), "--eval-data", str(held_out),
               "--output", str(tmp_path / "two"), "--chunk-size", "3", "--no-progress",
               "--batch-size", "8", "--max-seq-length", "32", "--steps", "4",
               "--warmup-steps", "1", "--save-every", "2", "--lr", "2e-5", "--seed", "3"]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr[-3000:]
    log = [json.loads(line) for line in (tmp_path / "two" / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r]
    assert len(losses) == 4
    for expected, actual in zip([r["loss"] for r in single.records], losses):
        assert abs(actual - expected) <= 1e-5 * abs(expected)
    assert len([r for r in log if "eval_mrr" in r]) == 2  # before and after; rank 0 only
    one = load_file(tmp_path / "one" / "model.safetensors")
    two = load_file(tmp_path / "two" / "model.safetensors")
    assert_same_trained_weights(two, one, rtol=1e-5, atol=1e-6)
