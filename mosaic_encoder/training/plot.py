"""``mosaic-encoder plot-run DIR``: loss and evaluation metrics of a run, from its ``log.jsonl``.

The figure has two panels against the optimizer step: the training loss (with the learning rate
on a second axis), and every held-out metric the run logged (``eval_mrr``, ``eval_recall_at_1``
and, for Matryoshka runs, each truncated dimension's). matplotlib is imported only here.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

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
    steps = [r for r in records if isinstance(r.get("loss"), (int, float))]
    if not steps:
        raise InputError(f"training log {log} holds no training step yet.")
    metrics = sorted({key for r in records for key in r
                      if key.startswith("eval_") and key != "eval_size"})

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, (losses, evaluations) = pyplot.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    losses.plot([r["step"] for r in steps], [r["loss"] for r in steps], label="loss")
    losses.set(xlabel="step", ylabel="training loss", title=f"{Path(directory).name}: loss")
    rates = losses.twinx()
    rates.plot([r["step"] for r in steps], [r.get("lr", 0.0) for r in steps], color="tab:gray",
               linestyle=":", label="learning rate")
    rates.set_ylabel("learning rate")
    for metric in metrics:
        points = [(r["step"], r[metric]) for r in records if metric in r]
        evaluations.plot(*zip(*points), marker="o", label=metric.removeprefix("eval_"))
    evaluations.set(xlabel="step", ylabel="held-out metric", title="evaluation")
    if metrics:
        evaluations.legend()
    else:
        evaluations.text(0.5, 0.5, "no evaluation logged", ha="center", va="center",
                         transform=evaluations.transAxes)
    target = Path(output) if output is not None else Path(directory) / run_dir.PLOT_FILE
    with atomic_path(target) as temporary:
        figure.savefig(temporary, format="png", dpi=110)
    pyplot.close(figure)
    return target


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
