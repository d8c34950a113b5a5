"""``mosaic-encoder plot-run DIR``: loss and evaluation metrics of a run, from its ``log.jsonl``.

The figure has a panel against the optimizer step for the training loss (solid, left axis) with
the learning rate (dotted, right axis), and, when the run evaluated anything, a second one for
every held-out metric it logged (``eval_mrr``, ``eval_recall_at_1`` and, for Matryoshka runs,
each truncated dimension's). Metrics whose values are the same at every evaluation (``mrr`` and
``mrr@192`` when 192 is the full dimension) are one line named after all of them, so that no
line hides another; legends sit under the panels, off the data; steps are whole numbers.
matplotlib is imported only here.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..atomic import atomic_path
from ..errors import InputError


def plot_run(directory: Path, output: Path | None = None) -> Path:
    """Draw ``directory/log.jsonl`` into ``output`` (default ``directory/plot.png``).

    Raises:
        InputError: no log, or a log without a training step.
        CheckpointError: a line of the log is not a record with a step.
    """
    from . import run_dir

    log = Path(directory) / run_dir.LOG_FILE
    if not log.is_file():
        raise InputError(f"{directory} holds no {run_dir.LOG_FILE}; is it a training run?")
    records = run_dir.read_log(log)
    if not any(isinstance(r.get("loss"), (int, float)) for r in records):
        raise InputError(f"training log {log} holds no training step yet.")
    figure = run_figure(records, Path(directory).name)
    target = Path(output) if output is not None else Path(directory) / run_dir.PLOT_FILE
    with atomic_path(target) as temporary:
        figure.savefig(temporary, format="png", dpi=110)
    return target


def run_figure(records: list[dict[str, Any]], name: str):
    """The :class:`matplotlib.figure.Figure` of a run's log records (see the module)."""
    from matplotlib import ticker
    from matplotlib.figure import Figure

    steps = [r for r in records if isinstance(r.get("loss"), (int, float))]
    metrics = _metric_lines(records)
    figure = Figure(figsize=(5.6 * (1 + bool(metrics)), 4.4), layout="constrained")
    axes = figure.subplots(1, 1 + bool(metrics), squeeze=False)[0]
    losses = axes[0]
    drawn = losses.plot([r["step"] for r in steps], [r["loss"] for r in steps],
                        label="training loss (left axis)")
    rates = losses.twinx()
    drawn += rates.plot([r["step"] for r in steps], [r.get("lr", 0.0) for r in steps],
                        color="tab:gray", linestyle=":", label="learning rate (right axis)")
    losses.set(xlabel="step", ylabel="training loss",
               title=f"{name}: loss" + ("" if metrics else " (no held-out evaluation logged)"))
    rates.set_ylabel("learning rate")
    losses.legend(handles=drawn, **_BELOW)
    for ax in axes:
        ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
    if metrics:
        evaluations = axes[1]
        for label, points in metrics.items():
            evaluations.plot(*zip(*points), marker="o", label=label)
        evaluations.set(xlabel="step", ylabel="held-out metric", title=f"{name}: evaluation")
        evaluations.legend(**_BELOW)
    return figure


# Legends under their panel, outside the data.
_BELOW = dict(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncols=2, fontsize="small",
              frameon=False)


def _metric_lines(records: list[dict[str, Any]]) -> dict[str, list[tuple[int, float]]]:
    """label -> (step, value) points of each held-out metric; metrics with the same points share
    one line, labelled ``"mrr = mrr@192"``."""
    names = sorted({key for r in records for key in r
                    if key.startswith("eval_") and key != "eval_size"
                    and isinstance(r[key], (int, float))})
    lines: dict[tuple, list[str]] = {}
    for metric in names:
        points = tuple((r["step"], r[metric]) for r in records if metric in r)
        lines.setdefault(points, []).append(metric.removeprefix("eval_"))
    return {" = ".join(labels): list(points) for points, labels in lines.items()}


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``plot-run`` subcommand; it runs :func:`run`."""
    parser = subparsers.add_parser("plot-run", help="plot a training run's loss and metrics",
                                   description="Plot the loss and held-out metrics of a training "
                                               "run from its log.jsonl, as a PNG.")
    parser.add_argument("directory", metavar="DIR", help="the run's --output directory")
    parser.add_argument("--output", metavar="FILE.png",
                        help="where to write the figure (default: DIR/plot.png)")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    target = plot_run(Path(args.directory), Path(args.output) if args.output else None)
    print(f"plot -> {target}", file=sys.stderr)
    return 0
