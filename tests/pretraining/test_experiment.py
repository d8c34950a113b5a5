from pathlib import Path

from mosaic_encoder.pretraining.experiment import VARIANTS, Settings, plot, variant_config


def test_the_four_variants_differ_only_in_their_axes():
    settings = Settings(output=Path("."), work=Path("."))
    configs = {name: variant_config(settings, name) for name in VARIANTS}
    assert {(c.position_embedding_type, c.feed_forward) for c in configs.values()} == {
        ("alibi", "glu"), ("absolute", "gelu"), ("alibi", "gelu"), ("absolute", "glu")}
    shared = {(c.hidden_size, c.num_hidden_layers, c.intermediate_size, c.vocab_size,
               c.max_position_embeddings, c.hidden_dropout_prob,
               c.attention_probs_dropout_prob) for c in configs.values()}
    assert shared == {(128, 4, 512, 8192, 1024, 0.1, 0.0)}


def test_chart_of_a_results_file(tmp_path):
    results = {"settings": {"length": 128, "eval_lengths": [128, 256]}, "variants": [
        {"name": name, "curve": [[1, 0.5, 9.0], [2, 1.0, 8.5]],
         "eval": [{"length": 128, "loss": 7.0}, {"length": 256, "loss": None}]}
        for name in VARIANTS]}
    plot(results, tmp_path / "chart.png")
    assert (tmp_path / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
