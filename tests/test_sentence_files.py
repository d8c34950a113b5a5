"""Reading a sentence-transformers directory (modules.json, pooling and sentence-bert configs):
every file checked, every field read validated."""

import json
import os

import pytest

from helpers import copy_checkpoint
from mosaic_encoder import CheckpointError
from mosaic_encoder.sentence import Pipeline


@pytest.mark.parametrize("file,content,message", [
    ("modules.json", {"type": "x"}, "must hold a JSON array of modules, got dict"),
    ("modules.json", [None], "entry 1 is not a JSON object"),
    ("modules.json", [{"type": None, "path": ""}], "needs string 'type' and 'path'"),
    ("modules.json", [{"type": "sentence_transformers.models.Transformer", "path": 3}],
     "needs string 'type' and 'path'"),
    ("modules.json", [{"type": "sentence_transformers.models.Pooling", "path": "../.."}],
     "outside the checkpoint directory"),
    ("modules.json", [{"type": "sentence_transformers.models.Transformer", "path": "/"}],
     "outside the checkpoint directory"),
    ("modules.json", [{"type": "sentence_transformers.models.Transformer", "path": "nope"}],
     "names the transformer directory .* which does not exist"),
    ("modules.json", "[" * 3000 + "]" * 3000, "nests JSON values too deeply"),
    ("1_Pooling/config.json", [], "must hold a JSON object, got an array"),
    ("sentence_bert_config.json", [1], "must hold a JSON object"),
    ("sentence_bert_config.json", {"max_seq_length": "512"}, "max_seq_length must be an integer"),
    ("sentence_bert_config.json", {"max_seq_length": 1}, "max_seq_length must be an integer"),
    ("sentence_bert_config.json", {"max_seq_length": int("9" * 4000)}, "a 13288-bit integer"),
    ("sentence_bert_config.json", '{"max_seq_length": ' + "9" * 5000 + "}", "number too large"),
    ("sentence_bert_config.json", {"do_lower_case": None}, "do_lower_case must be true or false"),
])
def test_malformed_sentence_transformers_files_are_one_sentence(tmp_path, file, content, message):
    directory = copy_checkpoint(tmp_path)
    (directory / file).write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(CheckpointError, match=message):
        Pipeline.from_directory(directory)


def test_a_fifo_in_place_of_a_module_config_is_refused(tmp_path):
    directory = copy_checkpoint(tmp_path)
    (directory / "1_Pooling" / "config.json").unlink()
    os.mkfifo(directory / "1_Pooling" / "config.json")
    with pytest.raises(CheckpointError, match="is not a regular file"):
        Pipeline.from_directory(directory)
