"""``mosaic-encoder plot-run``: a PNG of loss and metrics from log.jsonl; one sentence otherwise."""

import json

import pytest

from mosaic_encoder.cli import main


def _run(tmp_path, records):
    directory = tmp_path / "run"
    directory.mkdir()
    (directory / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return directory


def test_plots_loss_and_metrics(tmp_path, capsys):
    records = [{"step": 0, "eval_mrr": 0.2, "eval_recall_at_1": 0.1, "eval_size": 5}]
    records += [{"step": s, "loss": 2.0 / s, "lr": 1e-3, "grad_norm": 1.0} for s in (1, 2, 3)]
    records += [{"step": 3, "eval_mrr": 0.5, "eval_recall_at_1": 0.4, "eval_mrr@64": 0.45,
                 "eval_size": 5}]
    directory = _run(tmp_path, records)
    assert main(["plot-run", str(directory)]) == 0
    assert (directory / "plot.png").read_bytes().startswith(b"\x89PNG")
    assert main(["plot-run", str(directory), "--output", str(tmp_path / "elsewhere.png")]) == 0
    assert (tmp_path / "elsewhere.png").read_bytes().startswith(b"\x89PNG")
    assert "plot ->" in capsys.readouterr().err


@pytest.mark.parametrize("content, message", [
    (None, "holds no log.jsonl"),
    ('{"step": 0, "eval_mrr": 0.1}\n', "holds no training step yet"),
    ('{"step": 1, "loss": 1.0}\n[1, 2]\n', "line 2 is not a record with an integer step"),
])
def test_bad_runs_are_one_sentence(tmp_path, capsys, content, message):
    directory = tmp_path / "run"
    directory.mkdir()
    if content is not None:
        (directory / "log.jsonl").write_text(content)
    assert main(["plot-run", str(directory)]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines
    assert not (directory / "plot.png").exists()


def _drawn(figure):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure).draw()
    return figure


def test_the_figure_names_its_lines_steps_and_metrics():
    """Both line styles in a legend under the panel, whole-number steps, one line for metrics
    that are equal at every evaluation (mrr and mrr@192 at the full dimension), no legend over
    the data."""
    from mosaic_encoder.training.plot import run_figure

    records = [{"step": 0, "eval_mrr": 0.2, "eval_mrr@192": 0.2, "eval_mrr@64": 0.15,
                "eval_recall_at_1": 0.1, "eval_size": 5}]
    records += [{"step": s, "loss": 2.0 / s, "lr": 1e-3 * s / 5} for s in range(1, 6)]
    records += [{"step": 5, "eval_mrr": 0.5, "eval_mrr@192": 0.5, "eval_mrr@64": 0.45,
                 "eval_recall_at_1": 0.4, "eval_size": 5}]
    figure = _drawn(run_figure(records, "run"))
    losses, evaluations = (ax for ax in figure.axes if ax.get_title())
    legend = losses.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["training loss (left axis)",
                                                           "learning rate (right axis)"]
    assert [line.get_linestyle() for line in legend.get_lines()] == ["-", ":"]
    assert {line.get_label() for line in evaluations.get_lines()} == {"mrr = mrr@192", "mrr@64",
                                                                      "recall_at_1"}
    for ax in (losses, evaluations):
        left, right = ax.get_xlim()
        assert all(float(tick).is_integer() for tick in ax.get_xticks() if left <= tick <= right)
        assert not ax.get_legend().get_window_extent().overlaps(ax.get_window_extent())


def test_a_run_without_evaluations_is_one_panel():
    from mosaic_encoder.training.plot import run_figure

    figure = _drawn(run_figure([{"step": s, "loss": 1.0, "lr": 1e-4} for s in (1, 2)], "run"))
    titled = [ax.get_title() for ax in figure.axes if ax.get_title()]
    assert titled == ["run: loss (no held-out evaluation logged)"]
