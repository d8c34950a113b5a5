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
    assert {line.get_label() for line in figure.axes[0].get_lines()} == {"ours-sdpa", "baseline"}
