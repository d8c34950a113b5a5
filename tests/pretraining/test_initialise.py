import json
import re

import pytest
import torch

from mosaic_encoder import load_model
from mosaic_encoder.cli import main
from mosaic_encoder.config import MosaicConfig
from mosaic_encoder.models import MosaicBertForMaskedLM
from mosaic_encoder.pretraining.initialise import new_masked_lm

from .conftest import TOKENIZER, tiny_config


def test_bert_initialisation():
    config = MosaicConfig.from_dict(tiny_config(hidden_size=64, intermediate_size=256,
                                                position_embedding_type="absolute",
                                                feed_forward="gelu"))
    model = new_masked_lm(config, seed=1)
    for name, parameter in model.named_parameters():
        if "LayerNorm" in name or "layernorm" in name:
            expected = 1.0 if name.endswith("weight") else 0.0
            assert torch.all(parameter == expected), name
        elif name.endswith("bias"):
            assert torch.all(parameter == 0), name
        else:
            assert abs(float(parameter.detach().std()) - 0.02) < 0.003, name
    assert torch.all(model.bert.embeddings.word_embeddings.weight[config.pad_token_id] == 0)
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight
    again = new_masked_lm(config, seed=1)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                 again.state_dict().values()))


@pytest.mark.parametrize("variant", [dict(), dict(position_embedding_type="absolute",
                                                   feed_forward="gelu", layer_norm_position="pre")])
def test_init_writes_a_checkpoint_every_command_loads(tmp_path, capsys, variant):
    config = tmp_path / "config.json"
    config.write_text(json.dumps(tiny_config(**variant)))
    output = tmp_path / "model"
    assert main(["init", "--config", str(config), "--tokenizer", str(TOKENIZER),
                 str(output)]) == 0
    model = load_model(output)
    assert isinstance(model, MosaicBertForMaskedLM)
    assert model.config == MosaicConfig.from_dict(tiny_config(**variant))
    stored = json.loads((output / "config.json").read_text())
    assert stored["architectures"] == ["BertForMaskedLM"]
    assert {"tokenizer.json", "vocab.txt"} <= {p.name for p in output.iterdir()}
    capsys.readouterr()
    assert main(["fill-mask", "--model", str(output), "the [MASK] is blue"]) == 0
    assert main(["verify", str(output)]) == 0
    assert main(["encode", "--model", str(output), "a sentence"]) == 0


@pytest.mark.parametrize("changes,message", [
    (dict(hidden_size=33), "'hidden_size' \\(33\\) is not divisible"),
    (dict(vocab_size=1000), "vocab_size 1000 is too small for the tokenizer"),
    (dict(num_hidden_layers=0), "'num_hidden_layers' must be a positive integer"),
    (dict(layer_norm_position="middle"), "'layer_norm_position' must be one of 'post', 'pre'"),
])
def test_impossible_geometry_is_one_sentence_and_writes_nothing(tmp_path, capsys, changes,
                                                                 message):
    config = tmp_path / "config.json"
    config.write_text(json.dumps(tiny_config(**changes)))
    assert main(["init", "--config", str(config), "--tokenizer", str(TOKENIZER),
                 str(tmp_path / "out" / "model")]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("error: ")
    assert re.search(message, error)
    assert not (tmp_path / "out").exists()


def test_output_holding_something_else_is_refused_untouched(tmp_path, capsys):
    config = tmp_path / "config.json"
    config.write_text(json.dumps(tiny_config()))
    output = tmp_path / "model"
    output.mkdir()
    (output / "notes.txt").write_text("mine")
    assert main(["init", "--config", str(config), "--tokenizer", str(TOKENIZER),
                 str(output)]) == 1
    assert "is not empty" in capsys.readouterr().err
    assert [p.name for p in output.iterdir()] == ["notes.txt"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
