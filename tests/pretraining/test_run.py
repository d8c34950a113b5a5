"""Pretraining runs end to end: outputs every command loads, resume, and clear refusals."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from mosaic_encoder import load_model
from mosaic_encoder.cli import main
from mosaic_encoder.models import MosaicBertForMaskedLM
from mosaic_encoder.pretraining.config import PretrainConfig
from mosaic_encoder.pretraining.run import pretrain

from .conftest import write_corpus


class Stop(Exception):
    pass


def _config(tmp_path, model, name="run", **changes):
    values = dict(model=model, data=(write_corpus(tmp_path / "corpus.txt", 80),),
                  output=tmp_path / name, steps=6, batch_size=4, max_seq_length=32,
                  save_every=3, learning_rate=1e-3, seed=1, progress=False)
    values.update(changes)
    return PretrainConfig(**values)


def test_tiny_run_end_to_end_through_the_command_line(tmp_path, tiny_mlm, capsys):
    corpus = write_corpus(tmp_path / "corpus.txt", 80)
    held = write_corpus(tmp_path / "held.txt", 20, seed=2)
    output = tmp_path / "run"
    assert main(["pretrain", "--model", str(tiny_mlm), "--data", str(corpus), "--eval-data",
                 str(held), "--output", str(output), "--steps", "4", "--batch-size", "4",
                 "--max-seq-length", "32", "--eval-tokens", "256", "--lr", "1e-3",
                 "--no-progress"]) == 0
    assert "pretrained 4 steps" in capsys.readouterr().err
    log = [json.loads(line) for line in (output / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r]
    assert len(losses) == 4 and all(loss > 0 for loss in losses)
    assert [r["step"] for r in log if "eval_loss" in r] == [0, 4]
    assert isinstance(load_model(output), MosaicBertForMaskedLM)
    assert main(["verify", str(output)]) == 0
    assert main(["fill-mask", "--model", str(output), "the [MASK] sea"]) == 0
    capsys.readouterr()
    assert main(["eval-mlm", "--model", str(output), "--data", str(held), "--lengths", "32,64",
                 "--tokens", "128", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["length"] for r in rows] == [32, 64] and all(r["loss"] > 0 for r in rows)


def test_stopped_and_resumed_equals_uninterrupted(tmp_path, tiny_mlm):
    """Dropout is on (0.1 in the feed-forward), so this also checks the RNG state's return."""
    model = tmp_path / "dropout"
    shutil.copytree(tiny_mlm, model)
    values = json.loads((model / "config.json").read_text())
    values["hidden_dropout_prob"] = 0.1
    (model / "config.json").write_text(json.dumps(values))
    whole = pretrain(_config(tmp_path, model, "whole"))

    def stop_at_5(step, record):
        if step == 5:
            raise Stop

    with pytest.raises(Stop):
        pretrain(_config(tmp_path, model, "parts"), on_step=stop_at_5)
    resumed = pretrain(_config(tmp_path, model, "parts", resume=True))
    assert [r["step"] for r in resumed.records] == [4, 5, 6]
    for expected, actual in zip(whole.records[3:], resumed.records):
        assert actual["loss"] == pytest.approx(expected["loss"], rel=1e-6, abs=1e-7)
    a = load_file(tmp_path / "whole" / "model.safetensors")
    b = load_file(tmp_path / "parts" / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=1e-6, msg=name)


def test_gradient_accumulation_equals_one_pass(tmp_path, tiny_mlm):
    one = pretrain(_config(tmp_path, tiny_mlm, "one", steps=2, save_every=0))
    two = pretrain(_config(tmp_path, tiny_mlm, "two", steps=2, save_every=0, accumulation=2))
    for expected, actual in zip(one.records, two.records):
        assert actual["loss"] == pytest.approx(expected["loss"], rel=1e-5)
    a, b = (load_file(tmp_path / n / "model.safetensors") for n in ("one", "two"))
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-5, atol=1e-6, msg=name)


def _refused(tmp_path, capsys, argv, message):
    assert main(argv) == 1
    error = capsys.readouterr().err
    assert error.startswith("error: ") and error.count("\n") == 1, error
    assert message in error, error
    return error


@pytest.mark.parametrize("content,message", [
    (b"", "holds no documents"),
    (b"\n  \n\n", "holds no documents"),
    (b"good text\n\xff\xfe bad\n", "line 2 is not UTF-8 text"),
])
def test_bad_corpus_is_one_sentence_and_leaves_nothing(tmp_path, tiny_mlm, capsys, content,
                                                       message):
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(content)
    output = tmp_path / "run"
    _refused(tmp_path, capsys, ["pretrain", "--model", str(tiny_mlm), "--data", str(corpus),
                                "--output", str(output), "--steps", "2"], message)
    assert not output.exists()


@pytest.mark.parametrize("rate", ["0", "1", "1.5", "-0.1", "nan"])
def test_mask_rate_outside_the_open_interval_is_refused(tmp_path, tiny_mlm, capsys, rate):
    corpus = write_corpus(tmp_path / "corpus.txt", 10)
    _refused(tmp_path, capsys, ["pretrain", "--model", str(tiny_mlm), "--data", str(corpus),
                                "--output", str(tmp_path / "run"), "--steps", "2",
                                "--mask-rate", rate], "--mask-rate")
    assert not (tmp_path / "run").exists()


def test_output_holding_something_else_is_refused_untouched(tmp_path, tiny_mlm, capsys):
    corpus = write_corpus(tmp_path / "corpus.txt", 10)
    output = tmp_path / "run"
    output.mkdir()
    (output / "thesis.tex").write_text("keep me")
    _refused(tmp_path, capsys, ["pretrain", "--model", str(tiny_mlm), "--data", str(corpus),
                                "--output", str(output), "--steps", "2"], "thesis.tex")
    assert [p.name for p in output.iterdir()] == ["thesis.tex"]


def test_learned_positions_beyond_their_table_are_refused(tmp_path, capsys):
    from mosaic_encoder.pretraining.initialise import init_checkpoint

    from .conftest import TOKENIZER, tiny_config

    (tmp_path / "config.json").write_text(json.dumps(tiny_config(
        position_embedding_type="absolute", feed_forward="gelu", max_position_embeddings=64)))
    model = init_checkpoint(tmp_path / "config.json", TOKENIZER, tmp_path / "model")
    corpus = write_corpus(tmp_path / "corpus.txt", 10)
    _refused(tmp_path, capsys, ["pretrain", "--model", str(model), "--data", str(corpus),
                                "--output", str(tmp_path / "run"), "--steps", "2",
                                "--max-seq-length", "128"], "max_position_embeddings (64)")
    assert not (tmp_path / "run").exists()
    assert main(["eval-mlm", "--model", str(model), "--data", str(corpus), "--lengths", "32,128",
                 "--tokens", "64", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["loss"] is not None
    assert rows[1]["loss"] is None and "beyond max_position_embeddings (64)" in rows[1]["note"]


def test_continues_an_upstream_masked_lm_checkpoint_at_a_longer_length(tmp_path):
    """The bundled mosaic-tiny-mlm carries upstream's config (alibi_starting_size 48 and the
    leftover position_embedding_type "absolute"); its continuation states the fields it means."""
    from helpers import WEIGHTS

    corpus = write_corpus(tmp_path / "corpus.txt", 80)
    result = pretrain(PretrainConfig(model=WEIGHTS / "mosaic-tiny-mlm", data=(corpus,),
                                     output=tmp_path / "long", steps=1, batch_size=2,
                                     max_seq_length=256, save_every=0, progress=False))
    assert result.records[0]["loss"] > 0
    values = json.loads((tmp_path / "long" / "config.json").read_text())
    assert values["alibi_starting_size"] == 48
    assert (values["position_embedding_type"], values["feed_forward"]) == ("alibi", "glu")
    assert load_model(tmp_path / "long").config == load_model(WEIGHTS / "mosaic-tiny-mlm").config
