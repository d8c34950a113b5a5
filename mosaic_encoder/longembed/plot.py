"""Charts of ``eval-longembed`` results: nDCG@1 against document length, one panel per task.

``mosaic-encoder eval-longembed --plot FILE.png`` draws one model; several results written with
``--json`` go on one chart with::

    python -m mosaic_encoder.longembed.plot A.json B.json --labels a,b --output chart.png

Each model is a line; a dotted line marks chance, and a model's ``max_seq_length`` (when it is
inside the range shown) a vertical dashed line of its colour: past it, documents are truncated.
matplotlib is imported only here.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..arguments import CommandParser
from ..atomic import atomic_path
from ..errors import InputError
from ..inputs import open_input, parse_json


def save_chart(results: list[dict], labels: list[str], output: Path) -> Path:
    """Draw ``results`` (``eval-longembed --json`` objects) labelled ``labels`` into ``output``."""
    from matplotlib.figure import Figure

    tasks = list(dict.fromkeys(row["task"] for result in results for row in result["rows"]))
    figure = Figure(figsize=(4.8 * len(tasks), 3.8), layout="constrained")
    axes = figure.subplots(1, len(tasks), squeeze=False)[0]
    lengths = sorted({row["length"] for result in results for row in result["rows"]})
    for ax, task in zip(axes, tasks):
        for number, (result, label) in enumerate(zip(results, labels)):
            rows = sorted((r for r in result["rows"] if r["task"] == task),
                          key=lambda r: r["length"])
            color = f"C{number}"
            ax.plot([r["length"] for r in rows], [r["ndcg_at_1"] for r in rows], marker="o",
                    color=color, label=label)
            limit = result.get("max_seq_length")
            if limit is not None and lengths[0] <= limit < lengths[-1]:
                ax.axvline(limit, color=color, linestyle="--", alpha=0.6)
        chance = results[0]["chance"]["ndcg_at_1"]
        ax.axhline(chance, color="grey", linestyle=":", label=f"chance ({chance:g})")
        ax.set_xscale("log", base=2)
        ax.set_xticks(lengths, [str(n) for n in lengths], rotation=45)
        ax.minorticks_off()
        ax.set(ylim=(-0.03, 1.03), xlabel="document length (tokens)", ylabel="nDCG@1",
               title=task)
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize="small")
    figure.suptitle("LongEmbed-style retrieval by length (dashed: max_seq_length)",
                    fontsize="medium")
    with atomic_path(output) as temporary:
        figure.savefig(temporary, format="png", dpi=110)
    return output


def _load(path: str) -> dict:
    with open_input(path, "results file") as stream:
        result = parse_json(stream.read(), f"results file {path}")
    if not isinstance(result, dict) or not isinstance(result.get("rows"), list):
        raise InputError(f"results file {path} is not the JSON that eval-longembed --json "
                         f"writes.")
    return result


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m mosaic_encoder.longembed.plot``."""
    parser = CommandParser(prog="python -m mosaic_encoder.longembed.plot",
                           description="Draw eval-longembed --json results on one chart.")
    parser.add_argument("results", nargs="+", metavar="RESULTS.json",
                        help="files eval-longembed --json wrote")
    parser.add_argument("--labels", help="comma-separated line labels (default: model paths)")
    parser.add_argument("--output", required=True, metavar="FILE.png", help="the chart to write")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        results = [_load(path) for path in args.results]
        labels = args.labels.split(",") if args.labels else [r["model"] for r in results]
        if len(labels) != len(results):
            raise InputError(f"--labels names {len(labels)} lines for {len(results)} results "
                             f"files.")
        print(f"chart -> {save_chart(results, labels, Path(args.output))}", file=sys.stderr)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
