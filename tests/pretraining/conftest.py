"""Fixtures of the pretraining tests: a tiny tokenizer, corpora and fresh masked-LM checkpoints."""

import json
from pathlib import Path

import pytest

from helpers import WEIGHTS

TOKENIZER = WEIGHTS / "mosaic-tiny-mlm"
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "A journey of a thousand miles begins with a single step.",
    "Python reads the source file, compiles it and runs the byte code.",
    "Every module has a docstring that says what it is for.",
    "Rivers flow to the sea, and the sea returns the water as rain.",
    "She sells sea shells by the sea shore on sunny days.",
]


def tiny_config(**changes) -> dict:
    """A config.json mapping for a two-layer, 32-wide model on BERT's uncased vocabulary."""
    values = dict(vocab_size=30528, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=64, max_position_embeddings=256, hidden_dropout_prob=0.0,
                  attention_probs_dropout_prob=0.0, position_embedding_type="alibi",
                  feed_forward="glu")
    values.update(changes)
    return values


def write_corpus(path: Path, documents: int, seed: int = 0) -> Path:
    """``documents`` lines of English sentences, a different mix per line."""
    lines = [" ".join(SENTENCES[(i * 7 + j + seed) % len(SENTENCES)] for j in range(1 + i % 4))
             for i in range(documents)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture()
def corpus(tmp_path) -> Path:
    return write_corpus(tmp_path / "corpus.txt", 60)


@pytest.fixture(scope="session")
def tiny_mlm(tmp_path_factory) -> Path:
    """A freshly initialised ALiBi + GLU checkpoint (dropout off), written by ``init``."""
    from mosaic_encoder.pretraining.initialise import init_checkpoint

    folder = tmp_path_factory.mktemp("tiny-mlm")
    (folder / "config.json").write_text(json.dumps(tiny_config()), encoding="utf-8")
    return init_checkpoint(folder / "config.json", TOKENIZER, folder / "model")
