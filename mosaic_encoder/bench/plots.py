"""Charts of benchmark results (the JSON written by ``python -m mosaic_encoder.bench ... --out``).

``python -m mosaic_encoder.bench plots RESULTS.json [MORE.json ...] --out DIR`` writes PNG files;
in a notebook, import the functions, which return :class:`matplotlib.figure.Figure` objects (made
without pyplot, so nothing is left open; a notebook displays a returned figure as an image)::

    from mosaic_encoder.bench.plots import attention_figure, model_figure
    from mosaic_encoder.bench.results import load_results
    results = load_results("benchmarks/cpu/attention.json")
    attention_figure(results, metric="tflops", mode="fwd")

Attention figures have one panel per batch composition and one line per implementation, against
the longest sequence length (log scale). Only ``status == "ok"`` rows are drawn; unsupported
combinations simply have no point. Every axis is labelled in plain numbers at the measured
lengths (never ``2^11`` or ``6x10^2``), every panel has a title, and a footnote names the result
file and the command that measured it, so that two charts of different runs are told apart.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from matplotlib import ticker
from matplotlib.figure import Figure

from .results import WINDOW_OFF, row_label

METRICS = {
    "time_ms": ("median time (ms)", True),
    "tflops": ("achieved TFLOP/s (real query-key pairs)", False),
    "peak_bytes": ("peak memory during the call (MiB)", True),
}
MODEL_METRICS = {
    "tokens_per_s": ("tokens / s", True),
    "peak_bytes": ("peak memory during the forward (MiB)", True),
    "peak_rss_bytes": ("peak RSS of the process (MiB)", True),
}
# Panel titles of the model figure, by metric.
MODEL_TITLES = {"tokens_per_s": "speed", "peak_bytes": "activation memory (torch allocator)",
                "peak_rss_bytes": "whole process (weights, libraries, activations)"}
# What a line stands for, where its implementation name does not say it.
LEGEND = {"baseline": "baseline (dense, upstream-style)"}
IMPL_STYLES = {
    "ours-triton": dict(color="tab:red", marker="o"),
    "ours-sdpa": dict(color="tab:orange", marker="s"),
    "sdpa-dense": dict(color="tab:blue", marker="^"),
    "flex": dict(color="tab:green", marker="D"),
    "naive": dict(color="tab:gray", marker="x"),
    "baseline": dict(color="tab:gray", marker="x"),
}
_MIB = 2 ** 20


def _rows(results: dict | Iterable[dict]) -> list[dict]:
    return list(results["rows"] if isinstance(results, dict) else results)


def _title(results: dict | Iterable[dict]) -> str:
    if isinstance(results, dict):
        env = results.get("environment", {})
        return f"{env.get('device', '?')} | torch {env.get('torch', '?')}"
    return ""


def _footnote(figure: Figure, results: dict | Iterable[dict], source: str | None) -> None:
    """The result file and the command that measured it, under the panels."""
    command = results.get("command") if isinstance(results, dict) else None
    note = ": ".join(part for part in (source, command) if part)
    if note:
        figure.supxlabel(note, fontsize="x-small", color="dimgray")


def _scale(metric: str, value: float) -> float:
    return value / _MIB if metric.endswith("bytes") else value


def _pick(values: set, wanted, name: str):
    """The requested value, or the only / first (sorted) one present."""
    if wanted is not None:
        return wanted
    if not values:
        raise ValueError(f"no ok rows to plot (no {name}).")
    return sorted(values, key=str)[0]


def attention_figure(results: dict | Iterable[dict], metric: str = "time_ms", mode: str = "fwd",
                     dtype: str | None = None, heads: int | None = None,
                     head_dim: int | None = None,
                     compositions: Sequence[str] = ("single", "equal", "mixed"),
                     source: str | None = None) -> Figure:
    """``metric`` (time_ms, tflops or peak_bytes) against sequence length, per implementation.

    One panel per composition; ``dtype``, ``heads`` and ``head_dim`` default to the first value
    present among the ok rows of ``mode``; ``source`` (a file name) goes in the footnote.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {tuple(METRICS)}, got {metric!r}.")
    rows = [r for r in _rows(results) if r.get("kind") == "attention" and r["status"] == "ok"
            and r["mode"] == mode and r.get(metric) is not None]
    dtype = _pick({r["dtype"] for r in rows}, dtype, "dtype")
    heads = _pick({r["heads"] for r in rows}, heads, "heads")
    head_dim = _pick({r["head_dim"] for r in rows}, head_dim, "head_dim")
    rows = [r for r in rows if (r["dtype"], r["heads"], r["head_dim"]) == (dtype, heads, head_dim)]
    present = [c for c in compositions if any(r["composition"] == c for r in rows)] or \
        list(compositions[:1])
    ylabel, log_y = METRICS[metric]
    figure = Figure(figsize=(4.2 * len(present), 3.6), layout="constrained")
    axes = figure.subplots(1, len(present), squeeze=False)[0]
    for ax, composition in zip(axes, present):
        _panel(ax, [r for r in rows if r["composition"] == composition], "seqlen", metric,
               "longest sequence length (tokens)", log_y)
        ax.set_title(f"{composition} batches")
    axes[0].set_ylabel(ylabel)
    axes[-1].legend(fontsize="small")
    figure.suptitle(f"attention {mode}, {dtype}, {heads} heads x {head_dim} | {_title(results)}",
                    fontsize="medium")
    _footnote(figure, results, source)
    return figure


def model_figure(results: dict | Iterable[dict], metrics: Sequence[str] = ("tokens_per_s",
                                                                           "peak_bytes"),
                 source: str | None = None) -> Figure:
    """Whole-model rows (``case == "single"``): each metric against length, ours vs baseline,
    titled with the geometry, dtype and batch measured; ``source`` goes in the footnote."""
    rows = [r for r in _rows(results) if r.get("kind") == "model" and r["status"] == "ok"
            and r["case"] == "single"]
    metrics = [m for m in metrics if any(r.get(m) is not None for r in rows)] or \
        list(metrics[:1])
    figure = Figure(figsize=(4.6 * len(metrics), 3.9), layout="constrained")
    axes = figure.subplots(1, len(metrics), squeeze=False)[0]
    for ax, metric in zip(axes, metrics):
        ylabel, log_y = MODEL_METRICS[metric]
        _panel(ax, rows, "real_tokens", metric, "tokens per forward (one sequence)", log_y)
        ax.set_ylabel(ylabel)
        ax.set_title(MODEL_TITLES[metric])
        ax.legend(fontsize="small")
    figure.suptitle(f"full encoder forward, {_geometry(results, rows)} | {_title(results)}",
                    fontsize="medium")
    _footnote(figure, results, source)
    return figure


def _geometry(results: dict | Iterable[dict], rows: list[dict]) -> str:
    """The measured model in words: dtype and geometry (the settings', else the rows')."""
    dtypes = ", ".join(sorted({str(r.get("dtype")) for r in rows})) or "?"
    settings = results.get("settings", {}) if isinstance(results, dict) else {}
    geometry = settings.get("geometry")
    if isinstance(geometry, dict):
        return (f"{dtypes}: {geometry.get('hidden')} hidden, {geometry.get('layers')} layers, "
                f"{geometry.get('heads')} heads, feed-forward {geometry.get('intermediate')}, "
                f"vocab {geometry.get('vocab')}")
    return f"{dtypes}: " + ", ".join(sorted({str(r.get("geometry")) for r in rows}))


def _panel(ax, rows: list[dict], x: str, metric: str, xlabel: str, log_y: bool) -> None:
    """One line per implementation (its ``row_label``): ``metric`` of ``rows`` against column
    ``x``, on a base-2 logarithmic x axis."""
    lengths = set()
    for label in _ordered({row_label(r) for r in rows}):
        points = sorted((r[x], _scale(metric, r[metric]))
                        for r in rows if row_label(r) == label and r.get(metric) is not None)
        if points:
            ax.plot(*zip(*points), label=LEGEND.get(label, label), **_style(label))
            lengths.update(length for length, _ in points)
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(lengths))  # the measured lengths, as numbers
    ax.xaxis.set_major_formatter(_PLAIN)
    ax.xaxis.set_minor_locator(ticker.NullLocator())
    if log_y:
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(_PLAIN)
        # Minor ticks labelled too when the axis spans less than a decade (one point per line).
        ax.yaxis.set_minor_formatter(ticker.LogFormatter(labelOnlyBase=False,
                                                         minor_thresholds=(1, 0.4)))
    ax.set_xlabel(xlabel)
    ax.grid(True, which="both", alpha=0.3)


_PLAIN = ticker.FuncFormatter(lambda value, _: f"{value:g}")


def _style(label: str) -> dict:
    """An implementation's colour and marker; a ``window off`` row of it is dashed."""
    impl = label.removesuffix(WINDOW_OFF)
    style = dict(IMPL_STYLES.get(impl, IMPL_STYLES.get(impl.split("-")[0] + "-sdpa", {})))
    if impl != label:
        style["linestyle"] = "--"
    return style


def _ordered(labels: set[str]) -> list[str]:
    known = list(IMPL_STYLES)

    def key(label: str):
        impl = label.removesuffix(WINDOW_OFF)
        return (known.index(impl) if impl in known else len(known), label)
    return sorted(labels, key=key)


def save_figures(results: dict, out_dir: str | Path, stem: str = "",
                 source: str | None = None) -> list[Path]:
    """Every standard chart of ``results`` as PNG files in ``out_dir``; returns their paths.

    Attention charts are named ``<stem>-<metric>-<mode>-<dtype>-h<heads>d<head_dim>.png`` and
    the model chart ``<stem>.png``; ``stem`` defaults to "attention" / "model". ``source``, the
    result file's name, goes in each chart's footnote.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    rows = _rows(results)
    if any(r.get("kind") == "attention" and r["status"] == "ok" for r in rows):
        combos = sorted({(r["mode"], r["dtype"], r["heads"], r["head_dim"]) for r in rows
                         if r.get("kind") == "attention" and r["status"] == "ok"}, key=str)
        for mode, dtype, heads, head_dim in combos:
            tag = f"{mode.replace('+', '-')}-{dtype}-h{heads}d{head_dim}"
            for metric in METRICS:
                figure = attention_figure(results, metric, mode, dtype, heads, head_dim,
                                          source=source)
                path = out_dir / f"{stem or 'attention'}-{metric}-{tag}.png"
                figure.savefig(path, dpi=110)
                written.append(path)
    if any(r.get("kind") == "model" and r["status"] == "ok" for r in rows):
        figure = model_figure(results, tuple(MODEL_METRICS), source=source)
        path = out_dir / f"{stem or 'model'}.png"
        figure.savefig(path, dpi=110)
        written.append(path)
    return written

