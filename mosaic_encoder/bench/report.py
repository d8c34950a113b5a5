"""Markdown tables of result files: ``python -m mosaic_encoder.bench report FILE.json ...``.

BENCHMARKS.md pastes this output, so its tables are reproducible from the committed JSON.
"""

from __future__ import annotations

from .results import row_label

_MIB = 2 ** 20


def _mib(value) -> str:
    return "—" if value is None else f"{value / _MIB:,.1f}"


def _environment_line(document: dict) -> str:
    env = document.get("environment", {})
    parts = [env.get("device", "?"), f"{env.get('torch_threads', '?')} torch threads",
             f"Python {env.get('python', '?')}", f"torch {env.get('torch', '?')}",
             f"triton {env.get('triton', '?')}"]
    if env.get("cuda"):
        parts.append(f"CUDA {env['cuda']}")
    return ", ".join(parts) + f"; {document.get('created', '?')}, commit {env.get('git_commit')}"


def attention_tables(document: dict) -> str:
    """Per mode and dtype: a time (TFLOP/s) table and a peak-memory table, plus reasons."""
    rows = [r for r in document["rows"] if r.get("kind") == "attention"]
    impls = list(dict.fromkeys(row_label(r) for r in rows))
    out = [f"`{document['command']}`", "", _environment_line(document), ""]
    groups = dict.fromkeys((r["mode"], r["dtype"], r["heads"], r["head_dim"]) for r in rows)
    for mode, dtype, heads, head_dim in groups:
        selected = [r for r in rows if (r["mode"], r["dtype"], r["heads"], r["head_dim"]) ==
                    (mode, dtype, heads, head_dim)]
        cases = list(dict.fromkeys((r["composition"], r["seqlen"]) for r in selected))
        cell = {(r["composition"], r["seqlen"], row_label(r)): r for r in selected}
        present = [i for i in impls if any(row_label(r) == i and r["status"] == "ok"
                                           for r in selected)]
        absent = [i for i in impls if i not in present and any(row_label(r) == i
                                                               for r in selected)]
        for title, render in (
                ("median time, ms (TFLOP/s; executed TFLOP/s after a slash where reported)",
                 lambda r: f"{r['time_ms']:,.2f} ({r['tflops']:.3g}"
                           + (f" / {r['executed_tflops']:.3g}" if r.get("executed_tflops")
                              is not None else "") + ")"),
                ("peak memory during the call, MiB", lambda r: _mib(r["peak_bytes"]))):
            out += [f"**{mode}, {dtype}, {heads} heads x {head_dim}: {title}**", ""]
            out.append("| composition | L | seqs | tokens | " + " | ".join(present) + " |")
            out.append("|---|---:|---:|---:|" + "---:|" * len(present))
            for composition, seqlen in cases:
                any_row = next(r for r in selected if (r["composition"], r["seqlen"]) ==
                               (composition, seqlen))
                cells = []
                for impl in present:
                    r = cell.get((composition, seqlen, impl))
                    cells.append(render(r) if r and r["status"] == "ok" else "—")
                out.append(f"| {composition} | {seqlen} | {any_row['num_seqs']} | "
                           f"{any_row['total_tokens']} | " + " | ".join(cells) + " |")
            out.append("")
        errors = []
        for impl in present:
            ok = [r for r in selected if row_label(r) == impl and r["status"] == "ok"
                  and r["max_abs_err"] is not None]
            if ok:
                worst = max(r["max_abs_err"] for r in ok)
                grad = [r["max_abs_err_grad"] for r in ok if r["max_abs_err_grad"] is not None]
                errors.append(f"{impl} {worst:.1e}" + (f" (grads {max(grad):.1e})" if grad else ""))
        if errors:
            out += ["Largest |error| against the float64 oracle: " + "; ".join(errors) + ".", ""]
        for impl in absent:
            reasons = sorted({r["reason"] for r in selected if row_label(r) == impl})
            out += [f"{impl}: no result — " + " / ".join(reasons), ""]
    return "\n".join(out)


def model_table(document: dict) -> str:
    rows = [r for r in document["rows"] if r.get("kind") == "model"]
    out = [f"`{document['command']}`", "", _environment_line(document), "",
           "| case | tokens (padded) | impl | median s (samples) | tokens/s | speed-up | "
           "peak MiB | peak RSS MiB | RSS before MiB | state MiB | max diff |",
           "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        case = f"{r['case']} {r['seqlen']}" if r["case"] == "single" else \
            f"corpus ({r['num_seqs']} docs ≤ {r['seqlen']})"
        tokens = f"{r['real_tokens']} ({r['padded_tokens']})"
        impl = row_label(r)
        if r["status"] != "ok":
            out.append(f"| {case} | {tokens} | {impl} | {r['status']}: {r['reason']} "
                       "| | | | | | | |")
            continue
        speedup = "—" if r.get("speedup_vs_baseline") is None else \
            f"{r['speedup_vs_baseline']:.2f}x"
        diff = "—" if r.get("max_abs_diff_vs_baseline") is None else \
            f"{r['max_abs_diff_vs_baseline']:.1e}"
        out.append(f"| {case} | {tokens} | {impl} | {r['time_s']:.3f} ({r['samples']}) | "
                   f"{r['tokens_per_s']:,.0f} | {speedup} | {_mib(r['peak_bytes'])} | "
                   f"{_mib(r.get('peak_rss_bytes'))} | {_mib(r.get('rss_before_bytes'))} | "
                   f"{_mib(r.get('state_bytes'))} | {diff} |")
    return "\n".join(out) + "\n"


def render(document: dict) -> str:
    return model_table(document) if document.get("kind") == "model" else \
        attention_tables(document)

