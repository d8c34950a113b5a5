"""Contrastive training runs: logging, evaluation, publishing, resume equivalence, gradient cache."""

import json
import os

import pytest
import torch
from safetensors.torch import load_file

from mosaic_encoder.errors import CheckpointError, InputError
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
    with pytest.raises(InputError, match="started with batch_size 8, not 4"):
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


def test_resume_with_more_steps_extends_a_finished_run(tmp_path):
    settings = dict(steps=4, eval_data=None, save_every=0)
    train(_config(tmp_path, **settings))
    extended = train(_config(tmp_path, **dict(settings, steps=6), resume=True))
    assert [r["step"] for r in extended.records] == [5, 6]
    # The schedule is stretched to the new end: warm-up 2, then decay from step 2 to step 6.
    assert extended.records[0]["lr"] == pytest.approx(1e-3 * (6 - 4) / (6 - 2))
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("change, message", [
    ({"steps": 5, "save_every": 2}, "has 6 steps and its newest checkpoint is at step 4"),
    ({"learning_rate": 1e-4}, "started with learning_rate 0.001, not 0.0001"),
    ({"loss": "symmetric"}, "started with loss mnrl, not symmetric"),
])
def test_changes_that_break_equality_are_refused_by_name(tmp_path, change, message):
    def stop_at_5(step, record):
        if step == 5:
            raise Stop

    with pytest.raises(Stop):
        train(_config(tmp_path, eval_data=None, save_every=2), on_step=stop_at_5)
    settings = dict(eval_data=None, save_every=2, resume=True)
    with pytest.raises(InputError, match=message):
        train(_config(tmp_path, **dict(settings, **change)))


def test_best_checkpoint_prompts_and_tensorboard(tmp_path):
    """--keep-best keeps the best evaluation's model; the prompts are saved where
    sentence-transformers reads them; TensorBoard receives the logged scalars."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = _config(tmp_path, eval_every=2, keep_best="mrr", query_prompt="query: ",
                     document_prompt="passage: ", matryoshka_dims=(64, 16))
    result = train(config)
    best = json.loads((config.output / "best" / "best.json").read_text())
    values = [e["eval_mrr"] for e in result.evaluations]
    assert best["eval_mrr"] == max(values)
    assert best["step"] == result.evaluations[values.index(max(values))]["step"]
    assert {"eval_mrr@64", "eval_recall_at_1@16"} <= set(result.evaluations[-1])
    assert SentenceEncoder(config.output / "best").encode("a sentence").shape == (192,)
    model = SentenceTransformer(str(config.output), device="cpu")
    assert model.prompts == {"query": "query: ", "document": "passage: "}
    events = EventAccumulator(str(config.output / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("loss")] == [1, 2, 3, 4, 5, 6]
    assert [e.step for e in events.Scalars("eval_mrr")] == [0, 2, 4, 6]


def test_dtype_bf16_on_cpu_trains_in_bfloat16(tmp_path):
    settings = dict(steps=2, eval_data=None)
    fp32 = train(_config(tmp_path, "fp32", dtype="fp32", **settings))
    bf16 = train(_config(tmp_path, "bf16", dtype="bf16", **settings))
    for a, b in zip(fp32.records, bf16.records):
        assert a["loss"] != b["loss"] and b["loss"] == pytest.approx(a["loss"], rel=0.05)


def test_gradient_checkpointing_run_equals_plain_run(tmp_path):
    """Dropout on: recomputation replays each layer's masks."""
    settings = dict(steps=3, eval_data=None, learning_rate=2e-5)
    plain = train(_config(tmp_path, "plain", **settings))
    checkpointed = train(_config(tmp_path, "checkpointed", gradient_checkpointing=True,
                                 **settings))
    for p, c in zip(plain.records, checkpointed.records):
        assert c["loss"] == pytest.approx(p["loss"], rel=1e-5)


def test_resuming_from_a_checkpoint_holding_another_model_is_one_sentence(tmp_path):
    """A checkpoint whose weights are a masked-LM model (no pooler) is refused by name."""
    train(_config(tmp_path, steps=3, save_every=3, eval_data=None))
    checkpoint = tmp_path / "run" / "checkpoints" / "step-00000003"
    for name in ("model.safetensors", "config.json"):
        (checkpoint / name).write_bytes((TINY.parent / "mosaic-tiny-mlm" / name).read_bytes())
    with pytest.raises(CheckpointError, match=f"checkpoint {checkpoint} holds another model than "
                                              f"the one this run trains \\(pooler.dense.bias, "
                                              f"pooler.dense.weight differ\\)"):
        train(_config(tmp_path, steps=6, eval_data=None, resume=True))
