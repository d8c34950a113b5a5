import subprocess
import sys
from pathlib import Path

from mosaic_encoder.positions import POSITION_SCHEMES
from mosaic_encoder.pretraining.experiment import Settings, plot, unigram_entropy, variant_config
from mosaic_encoder.tokenizer import TextTokenizer

from .conftest import TOKENIZER


def test_the_variants_are_the_position_schemes_and_differ_only_there():
    settings = Settings(output=Path("."), work=Path("."))
    configs = {name: variant_config(settings, name) for name in settings.positions}
    assert list(configs) == list(POSITION_SCHEMES)
    assert {c.position_embedding_type for c in configs.values()} == set(POSITION_SCHEMES)
    shared = {(c.hidden_size, c.num_hidden_layers, c.intermediate_size, c.vocab_size,
               c.max_position_embeddings, c.feed_forward, c.norm_type, c.layer_norm_position,
               c.hidden_dropout_prob, c.attention_probs_dropout_prob) for c in configs.values()}
    assert shared == {(128, 4, 512, 8192, 1024, "glu", "layernorm", "post", 0.1, 0.0)}


def test_unigram_entropy_by_hand(tmp_path):
    """Two documents of the same two words: p = 1/2 each, entropy ln 2."""
    held = tmp_path / "held.txt"
    held.write_text("sea river\nriver sea\n")
    tokenizer = TextTokenizer(TOKENIZER / "tokenizer.json")
    assert abs(unigram_entropy(tokenizer, held) - 0.6931471805599453) < 1e-12


def test_chart_of_a_results_file(tmp_path):
    results = {"settings": {"length": 128, "eval_lengths": [128, 256], "feed_forward": "glu"},
               "held_out_unigram_entropy": 7.5, "variants": [
                   {"name": name, "curve": [[1, 0.5, 9.0], [2, 1.0, 8.5]],
                    "eval": [{"length": 128, "loss": 7.0}, {"length": 256, "loss": None}]}
                   for name in POSITION_SCHEMES]}
    plot(results, tmp_path / "chart.png")
    assert (tmp_path / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_arguments_are_one_sentence():
    done = subprocess.run([sys.executable, "-m", "mosaic_encoder.pretraining.experiment",
                           "--positions", "alibi,rotary"], capture_output=True, text=True)
    assert done.returncode == 2 and "--positions takes comma-separated names among" in done.stderr
    assert "Traceback" not in done.stderr
