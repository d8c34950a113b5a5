"""Contrastive training runs: logging, evaluation, publishing, resume equivalence, gradient cache."""

import json

import pytest
import torch
from safetensors.torch import load_file

from mosaic_encoder.errors import InputError
from mosaic_encoder.sentence import SentenceEncoder
from mosaic_encoder.training.config import TrainConfig
from mosaic_encoder.training.contrastive import train

from helpers import TINY, assert_same_trained_weights, pairs, write_jsonl


class Stop(Exception):
    pass


def _config(tmp_path, output="run", **changes):
    data = (write_jsonl(tmp_path / "a.jsonl", pairs(24, "a ")),
            write_jsonl(tmp_path / "b.jsonl", pairs(40, "b ", negatives=True)))
    values = dict(model=TINY, data=data, output=tmp_path / output,
                  eval_data=write_jsonl(tmp_path / "held.jsonl", pairs(10, "h ")), batch_size=8,
                  max_seq_length=32, steps=6, warmup_steps=2, save_every=3, eval_every=4,
                  learning_rate=1e-3, progress=False)
    values.update(changes)
    return TrainConfig(**values)


def test_a_run_logs_evaluates_and_publishes(tmp_path):
    config = _config(tmp_path)
    result = train(config)
    assert [r["step"] for r in result.records] == [1, 2, 3, 4, 5, 6]
    assert [e["step"] for e in result.evaluations] == [0, 4, 6]
    assert result.records[0]["lr"] == 0.0 and result.records[2]["lr"] == pytest.approx(1e-3)
    log = [json.loads(line) for line in (config.output / "log.jsonl").read_text().splitlines()]
    assert [r for r in log if "loss" in r] == result.records
    assert all(r["tokens_per_s"] > 0 and r["grad_norm"] > 0 for r in result.records)
    assert [p.name for p in (config.output / "checkpoints").iterdir()] == ["step-00000006"]
    final = load_file(config.output / "model.safetensors")
    saved = load_file(config.output / "checkpoints" / "step-00000006" / "model.safetensors")
    assert final.keys() == saved.keys() and all(torch.equal(final[k], saved[k]) for k in final)
    assert SentenceEncoder(config.output).encode("a sentence").shape == (192,)


def test_stopped_and_resumed_equals_uninterrupted(tmp_path):
    """Dropout is on, so this also checks that the RNG state comes back with the checkpoint."""
    whole = train(_config(tmp_path, "whole"))

    def stop_at_5(step, record):
        if step == 5:
            raise Stop

    with pytest.raises(Stop):
        train(_config(tmp_path, "parts"), on_step=stop_at_5)
    resumed = train(_config(tmp_path, "parts", resume=True))
    assert [r["step"] for r in resumed.records] == [4, 5, 6]
    for expected, actual in zip(whole.records[3:], resumed.records):
        assert actual["loss"] == pytest.approx(expected["loss"], rel=1e-6, abs=1e-7)
    a = load_file(tmp_path / "whole" / "model.safetensors")
    b = load_file(tmp_path / "parts" / "model.safetensors")
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=1e-6, msg=name)
    log = [json.loads(line) for line in (tmp_path / "parts" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3, 4, 5, 6]


def test_resume_with_other_data_is_refused(tmp_path):
    train(_config(tmp_path, steps=3, eval_data=None))
    with pytest.raises(InputError, match="started with other data or settings"):
        train(_config(tmp_path, steps=3, eval_data=None, resume=True, batch_size=4))


def test_gradient_cache_run_equals_plain_run(tmp_path, tiny_no_dropout):
    """At the card's learning rate (see assert_same_trained_weights for the key bias)."""
    settings = dict(model=tiny_no_dropout, steps=3, eval_data=None, learning_rate=2e-5)
    plain = train(_config(tmp_path, "plain", **settings))
    cached = train(_config(tmp_path, "cached", chunk_size=5, **settings))
    for p, c in zip(plain.records, cached.records):
        assert c["loss"] == pytest.approx(p["loss"], rel=1e-5)
    a, b = load_file(tmp_path / "plain" / "model.safetensors"), \
        load_file(tmp_path / "cached" / "model.safetensors")
    assert_same_trained_weights(b, a, rtol=1e-5, atol=1e-6)
