"""Charts of result files (mosaic_encoder.bench.plots) and their command."""

import pytest

from helpers import ROOT
from mosaic_encoder.bench.cli import main
from mosaic_encoder.bench.results import load_results


def test_plots(tmp_path):
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    from mosaic_encoder.bench import plots

    out = tmp_path / "attention.json"
    assert main(["attention", "--device", "cpu", "--impls", "ours-sdpa,naive", "--lengths", "16,32",
                 "--compositions", "single", "--heads", "2", "--head-dims", "8", "--modes", "fwd",
                 "--min-run-time", "0", "--min-samples", "1", "--window", "both",
                 "--out", str(out)]) == 0
    results = load_results(out)
    for metric in plots.METRICS:
        figure = plots.attention_figure(results, metric, mode="fwd")
        assert isinstance(figure, Figure)
        lines = {line.get_label(): line for line in figure.axes[0].get_lines()}
        assert set(lines) == {"ours-sdpa", "ours-sdpa window off", "naive"}
        assert lines["ours-sdpa window off"].get_linestyle() == "--"
        assert figure.axes[0].get_ylabel() == plots.METRICS[metric][0]
    written = plots.save_figures(results, tmp_path / "png")
    assert written and all(p.suffix == ".png" and p.stat().st_size > 1000 for p in written)
    assert main(["plots", str(out), "--out", str(tmp_path / "cli")]) == 0
    assert list((tmp_path / "cli").glob("*.png"))


def test_model_figure_labels_each_axis_with_its_metric():
    pytest.importorskip("matplotlib")
    from mosaic_encoder.bench import plots

    results = load_results(ROOT / "benchmarks" / "cpu" / "model.json")
    figure = plots.model_figure(results, tuple(plots.MODEL_METRICS))
    assert [ax.get_ylabel() for ax in figure.axes] == [
        label for label, _ in plots.MODEL_METRICS.values()]
    assert {line.get_label() for line in figure.axes[0].get_lines()} == {
        "ours-sdpa", "baseline (dense, upstream-style)"}


def test_one_point_per_line_gets_plain_tick_labels():
    """A single length per line: ticks read 16 and 2, never 2^4 or 2x10^0."""
    pytest.importorskip("matplotlib")
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from mosaic_encoder.bench import plots

    base = dict(kind="attention", status="ok", mode="fwd", dtype="float32", heads=2, head_dim=8,
                composition="single", seqlen=16, tflops=0.1, peak_bytes=2 ** 21)
    rows = [dict(base, impl="ours-sdpa", time_ms=2.0), dict(base, impl="naive", time_ms=3.0)]
    figure = plots.attention_figure({"rows": rows, "command": "python -m mosaic_encoder.bench "
                                                              "attention"}, source="a.json")
    FigureCanvasAgg(figure).draw()
    ax = figure.axes[0]
    labels = [t.get_text() for t in ax.get_xticklabels() + ax.get_yticklabels()
              + ax.get_yticklabels(minor=True) if t.get_text()]
    assert "16" in labels and "2" in labels and "3" in labels
    assert all(label.replace(".", "").isdigit() for label in labels), labels
    assert ax.get_title() == "single batches"
    assert figure.get_supxlabel() == "a.json: python -m mosaic_encoder.bench attention"


def test_the_model_figure_names_its_panels_geometry_and_baseline():
    pytest.importorskip("matplotlib")
    from mosaic_encoder.bench import plots

    results = load_results(ROOT / "benchmarks" / "cpu" / "model.json")
    figure = plots.model_figure(results, tuple(plots.MODEL_METRICS), source="model.json")
    assert [ax.get_title() for ax in figure.axes] == list(plots.MODEL_TITLES.values())
    assert "float32: 768 hidden, 12 layers, 12 heads, feed-forward 3072, vocab 30528" in \
        figure.get_suptitle()
    assert figure.get_supxlabel().startswith("model.json: ")
    assert "baseline (dense, upstream-style)" in {line.get_label()
                                                  for line in figure.axes[0].get_lines()}
