"""The generic loop on a small regression task: schedule, resume, non-finite stops, failed runs,
and resume state as untrusted input."""

import json
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from mosaic_encoder.errors import CheckpointError, InputError, TrainingError
from mosaic_encoder.training import run_dir
from mosaic_encoder.training.loop import LoopSettings, TrainResult, run, warmup_linear


class Regression:
    """A Task: fit y = x . w + noise with a linear layer and a LayerNorm'd input."""

    def __init__(self, steps=6, divergent_after=None):
        with torch.random.fork_rng():  # the same initial weights whatever ran before
            torch.manual_seed(0)
            self.model = nn.Sequential(nn.LayerNorm(4), nn.Dropout(0.1), nn.Linear(4, 1))
        self.fingerprint = {"task": "regression"}
        self.steps = steps
        self.divergent_after = divergent_after

    def batch(self, step, rank, world_size):
        generator = torch.Generator().manual_seed(step)
        x = torch.randn(8, 4, generator=generator)
        y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.1 * torch.randn(8, generator=generator)
        if self.divergent_after is not None and step >= self.divergent_after:
            x = x * float("inf")
        return x, y

    def backward(self, wrapped, batch, no_sync):
        x, y = batch
        loss = (wrapped(x).squeeze(1) - y).square().mean()
        loss.backward()
        return float(loss.detach()), x.shape[0]

    def evaluate(self, step):
        x, y = self.batch(10_000, 0, 1)
        with torch.no_grad():
            return {"eval_loss": float((self.model.eval()(x).squeeze(1) - y).square().mean())}

    def save_model(self, directory):
        save_file({k: v.contiguous() for k, v in self.model.state_dict().items()},
                  directory / "model.safetensors")

    def load_model(self, directory):
        self.model.load_state_dict(load_file(directory / "model.safetensors"))


def _settings(tmp_path, name="run", **changes):
    values = dict(output=tmp_path / name, learning_rate=0.3, warmup_steps=2, save_every=3,
                  eval_every=2, progress=False, tensorboard=False)
    values.update(changes)
    return LoopSettings(**values)


def _train(settings, task=None, on_step=None):
    return run(settings, lambda processes: task or Regression(), on_step)


class Stop(Exception):
    pass


def _stop_at(step):
    def on_step(taken, record):
        if taken == step:
            raise Stop
    return on_step


def test_warmup_then_linear_decay():
    factor = warmup_linear(4, 10)
    assert [factor(s) for s in (0, 2, 4, 7, 10)] == [0.0, 0.5, 1.0, 0.5, 0.0]


def test_a_task_trains_logs_and_publishes(tmp_path):
    result = _train(_settings(tmp_path))
    assert [r["step"] for r in result.records] == [1, 2, 3, 4, 5, 6]
    assert [e["step"] for e in result.evaluations] == [0, 2, 4, 6]
    assert result.evaluations[-1]["eval_loss"] < result.evaluations[0]["eval_loss"]
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r for r in log if "loss" in r] == result.records
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == \
        ["checkpoints", "log.jsonl", "model.safetensors"]


def test_resumed_equals_uninterrupted_with_dropout(tmp_path):
    whole = _train(_settings(tmp_path, "whole"))
    with pytest.raises(Stop):
        _train(_settings(tmp_path, "parts"), on_step=_stop_at(5))
    resumed = _train(_settings(tmp_path, "parts", resume=True))
    assert [r["step"] for r in resumed.records] == [4, 5, 6]
    assert [r["loss"] for r in resumed.records] == [r["loss"] for r in whole.records[3:]]
    a, b = load_file(tmp_path / "whole" / "model.safetensors"), \
        load_file(tmp_path / "parts" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_resumed_run_keeps_its_earlier_evaluations_and_says_what_ran(tmp_path):
    with pytest.raises(Stop):
        _train(_settings(tmp_path), on_step=_stop_at(5))
    resumed = _train(_settings(tmp_path, resume=True))
    assert [e["step"] for e in resumed.evaluations] == [0, 2, 4, 6]
    assert resumed.first_step == 3
    assert resumed.summary("trained", "loss").startswith(
        f"trained 3 steps (4-6 of 6, resumed from step 3) -> {tmp_path / 'run'}; mean loss of "
        f"steps 4 ")
    again = _train(_settings(tmp_path, resume=True))
    assert again.summary("trained", "loss") == \
        f"trained 0 steps: the run in {tmp_path / 'run'} had already reached step 6 of 6"


@pytest.mark.parametrize("losses,expected", [
    ([4.0], "loss 4.0000 (one step)"),
    ([4.0, 2.0], "mean loss of steps 1 4.0000 -> of steps 2 2.0000"),
    ([4.0, 3.0, 9.0, 1.0, 2.0], "mean loss of steps 1-2 3.5000 -> of steps 4-5 1.5000"),
    ([1.0] * 100 + [3.0] * 20 + [2.0] * 100,
     "mean loss of steps 1-50 1.0000 -> of steps 171-220 2.0000"),
])
def test_the_summary_compares_the_mean_loss_of_windows(losses, expected):
    records = [{"step": i + 1, "loss": loss} for i, loss in enumerate(losses)]
    result = TrainResult(Path("out"), len(losses), records=records)
    assert result.summary("trained", "loss", "held-out x") == \
        f"trained {len(losses)} steps -> out; {expected}; held-out x"


@pytest.mark.parametrize("setting, value", [("learning_rate", float("inf")),
                                            ("weight_decay", float("inf")),
                                            ("max_grad_norm", float("nan")),
                                            ("seed", 2 ** 63), ("seed", -1)])
def test_out_of_range_settings_are_refused(tmp_path, setting, value):
    with pytest.raises(InputError, match=f"training setting {setting} = .* is out of range"):
        _settings(tmp_path, **{setting: value})


def test_a_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    settings = _settings(tmp_path, save_every=2)
    with pytest.raises(TrainingError) as caught:
        _train(settings, Regression(divergent_after=4))
    message = str(caught.value)
    assert message.startswith("training stopped at step 5: the loss is nan")
    assert "step-00000004" in message and "\n" not in message
    kept = run_dir.checkpoint_dirs(settings.output)
    assert [p.name for p in kept] == ["step-00000004"]
    published = load_file(settings.output / "model.safetensors")
    saved = load_file(kept[0] / "model.safetensors")
    assert all(torch.equal(published[k], saved[k]) and torch.isfinite(saved[k]).all()
               for k in saved)


def test_a_run_failing_before_its_first_checkpoint_leaves_nothing(tmp_path):
    settings = _settings(tmp_path, save_every=0)
    with pytest.raises(TrainingError, match="nothing was saved"):
        _train(settings, Regression(divergent_after=2))
    assert not settings.output.exists()
    settings.output.mkdir()  # an existing directory is kept, emptied of what the run wrote
    with pytest.raises(TrainingError):
        _train(settings, Regression(divergent_after=2))
    assert list(settings.output.iterdir()) == []


def test_leftovers_without_a_checkpoint_do_not_block_a_new_run(tmp_path):
    """What a run killed before its first checkpoint leaves (SIGKILL: no clean-up ran)."""
    output = tmp_path / "run"
    (output / "checkpoints" / ".step-00000003.x.tmp").mkdir(parents=True)
    (output / "log.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
    result = _train(_settings(tmp_path))
    assert len(result.records) == 6
    log = (output / "log.jsonl").read_text().splitlines()
    assert json.loads(log[0]) == result.evaluations[0]  # the stale record is gone


def _finished_run(tmp_path):
    settings = _settings(tmp_path, save_every=0)
    _train(settings)
    return settings, run_dir.checkpoint_dirs(settings.output)[-1] / "training_state" / "state.pt"


def _edit_state(path, edit):
    state = torch.load(path, weights_only=True)
    edit(state)
    torch.save(state, path)


def _optimizer_of_other_shapes(state):
    # The state of a model whose weight is (2, 4) instead of (1, 4).
    moments = state["optimizer"]["state"]
    for values in moments.values():
        if values["exp_avg"].shape == (1, 4):
            values["exp_avg"] = torch.zeros(2, 4)
            values["exp_avg_sq"] = torch.zeros(2, 4)
    state["optimizer"]["param_groups"][0]["params"] = [0]


class Payload:
    def __reduce__(self):
        return (print, ("pickled code ran",))


@pytest.mark.parametrize("case, message", [
    ("no fingerprint", "has no valid 'fingerprint' entry"),
    ("optimizer of other shapes", "does not fit this model's optimizer"),
    ("pickle payload", "holds objects other than tensors and plain values"),
    ("not a dictionary", "holds a list, not the dictionary"),
    ("garbage log line", "log.jsonl line 2 is not a record with an integer step"),
    ("array log line", "log.jsonl line 2 is not a record with an integer step"),
])
def test_untrusted_resume_state_is_one_sentence(tmp_path, capsys, case, message):
    settings, path = _finished_run(tmp_path)
    log = settings.output / "log.jsonl"
    if case == "no fingerprint":
        _edit_state(path, lambda state: state.pop("fingerprint"))
    elif case == "optimizer of other shapes":
        _edit_state(path, _optimizer_of_other_shapes)
    elif case == "pickle payload":
        path.write_bytes(pickle.dumps({"step": Payload()}))
    elif case == "not a dictionary":
        torch.save([1, 2], path)
    else:
        lines = log.read_text().splitlines()
        lines.insert(1, "{not json" if case == "garbage log line" else "[1, 2]")
        log.write_text("\n".join(lines) + "\n")
    before = sorted(p.relative_to(settings.output) for p in settings.output.rglob("*"))
    with pytest.raises((CheckpointError, InputError)) as caught:
        _train(_settings(tmp_path, save_every=0, resume=True))
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert "pickled code ran" not in capsys.readouterr().out
    assert sorted(p.relative_to(settings.output) for p in settings.output.rglob("*")) == before
