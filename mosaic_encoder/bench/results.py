"""Result documents of the benchmarks: rows, their statuses, and the JSON and CSV files.

A document is one JSON object: ``schema`` (``"mosaic-encoder.bench/1"``), ``kind``
(``attention`` or ``model``), ``command`` (the command line, as ``python -m mosaic_encoder.bench
...``), ``argv``, ``created`` (UTC), ``environment`` (Python, torch, triton, NumPy, platform, CPU
model and count, torch threads, RAM, device, CUDA version, GPU name, capability and memory,
``TRITON_INTERPRET``, git commit), ``settings`` (every resolved option), ``conventions`` (the FLOP
and measurement conventions, copied from :mod:`.flops` and :mod:`.measure`) and ``rows``. Every
row has every column of its kind, null where one does not apply. The CSV beside the JSON has the
same rows, lists written space-separated.

Every measurement is a row whatever happened: ``status`` is ``ok``, ``unsupported`` (with a
``reason``: a known limit such as the device, a missing feature, the memory budget or running out
of memory) or ``failed`` (an unexpected exception, with its first line) -- never a crash.

Attention rows (``kind: "attention"``):

- ``impl``, ``composition``, ``seqlen`` (the longest sequence), ``num_seqs``, ``total_tokens``,
  ``padded_tokens`` (B x longest), ``seqlens``, ``heads``, ``head_dim``, ``dtype``, ``mode``
  (``fwd`` or ``fwd+bwd``): the case.
- ``window``: for ``ours-triton`` and ``ours-sdpa``, whether exact ALiBi windowing was on
  (``--window``: true, the default, lets the kernel switch it off where it cannot pay;
  ``"always"`` forces the kernel's windowing at every length); null for the other
  implementations, and in files that predate the switch (where it was on).
- ``status``, ``reason``, ``notes`` (how FlexAttention ran, the size of the naive table,
  interpreter caveats).
- ``time_ms``: median time of one call. CPU: ``torch.utils.benchmark.Timer`` with all torch
  threads, ``blocked_autorange(min_run_time)`` when ``min_samples`` calls fit in
  ``min_run_time``, else ``min_samples`` single ``timeit(1)`` calls. GPU:
  ``triton.testing.do_bench`` median. ``time_ms_events``: GPU, the median of 30 calls bracketed
  by CUDA events (null on CPU). ``timer``, ``samples``: which timer, and how many samples the
  median is over.
- ``real_pairs``, ``padded_pairs``: per head, sum of L_i^2 (query-key pairs within sequences) and
  B * max(L)^2.
- ``flops``, ``tflops``: the credited FLOPs of :mod:`.flops` (real pairs only) and
  ``flops / time / 1e12``. ``executed_flops``, ``executed_tflops``: where an implementation
  reports the work it really did, those FLOPs and the rate, else null. Forward ``ours-triton``:
  ``4 * head_dim`` per pair of the tiles the kernel visited
  (``mosaic_kernels.windowing.executed_forward_flops`` with the block sizes of its launch), equal
  to ``flops`` with the window off; null for its ``fwd+bwd`` rows (the backward kernels' visits
  are counted in tiles, not pairs). ``ours-sdpa``: the scores its own chunk plan computes
  (``mosaic_encoder.attention.sdpa_visited_pairs``; ``fwd+bwd`` 3.5x the forward, since the
  backward recomputes each chunk over the same keys).
- ``peak_bytes``, ``memory_method``: the peak memory of one call beyond what existed before it
  (:mod:`.measure`), and how it was measured. ``state_bytes``: memory built before the timed call
  and kept (the naive ALiBi table, the flex block mask). ``setup_s``: preparing the
  implementation plus its first (warm-up) call: compilation, autotuning.
- ``max_abs_err``, ``max_abs_err_grad``: max |output - oracle| over real tokens (padded query rows
  never enter it); for ``fwd+bwd`` also the max over dq, dk, dv. ``oracle``: ``float64``, or why
  there is no error (``skipped: sequence length ... > --oracle-max-seqlen``).
  ``tolerance``, ``tolerance_grad``, ``within_tolerance``: the bound for the dtype (float32
  1e-4 / 1e-3, float16 5e-3 / 5e-2, bfloat16 4e-2 / 4e-1, for N(0, 1) inputs) and whether both
  errors meet it.
- ``device``, ``torch``, ``triton``: machine and software on every row (the full record is the
  document's ``environment``).

Model rows (``kind: "model"``):

- ``impl``: ``ours-sdpa`` or ``ours-triton`` (the attention the package resolved) or
  ``baseline``; ``attention``: that implementation in words. ``window``: for ``ours-*`` the
  model's ``attention_window``; null for ``baseline``, which runs once per case.
- ``case`` (``single`` or ``corpus``), ``seqlen``, ``batch`` (sequences per batch),
  ``num_seqs``, ``real_tokens``, ``padded_tokens`` (what a padded computation processes),
  ``seqlens`` (``corpus`` rows), ``dtype``.
- ``checkpoint``: the checkpoint directory, or null for random weights, whose ``geometry`` is
  then ``hidden/heads/layers GLU intermediate vocab V``.
- ``status``, ``reason``, ``notes``, ``memory_method``, ``device``, ``torch``, ``triton``: as for
  attention rows.
- ``time_s``, ``timer``, ``samples``, ``time_s_events``: median seconds of the whole call (all
  batches for ``corpus``); CPU ``timeit(1)`` samples, at least one, up to ``--min-samples`` while
  the row stays under ``--max-row-time``; GPU ``do_bench`` and CUDA events.
- ``tokens_per_s``: ``real_tokens / time_s`` (padding is not credited).
  ``speedup_vs_baseline``: the baseline's ``time_s`` over this row's, same invocation.
- ``peak_bytes``: as for attention rows (in-process; excludes weights and prebuilt state).
  ``state_bytes``: the baseline's (heads, N, N) float32 ALiBi table (0 for ours).
  ``model_bytes``: parameter bytes.
- ``isolated``, ``rss_before_bytes``, ``peak_rss_bytes``: with ``--isolate``, the child
  process's resident set just before the first call and its ``ru_maxrss`` at the end: the peak
  RSS of the whole process (interpreter, torch, weights, table, activations).
- ``max_abs_diff_vs_baseline``: without ``--isolate``, max |ours - baseline| over real tokens
  (pooled embeddings for ``corpus``).
"""
from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import shlex
from collections.abc import Sequence
from pathlib import Path

import torch

from ..atomic import atomic_write
from . import flops, measure
from .names import COMMAND, WINDOW_SETTINGS

SCHEMA = "mosaic-encoder.bench/1"


class Unsupported(Exception):
    """A combination this implementation, device or size cannot run; becomes a reasoned row."""


WINDOW_OFF = " window off"  # the suffix of row_label for rows measured without windowing
WINDOW_ALWAYS = " window always"  # and for rows measured with windowing forced on


def window_settings(choice: str) -> tuple[bool | str, ...]:
    """``--window`` as the ``window`` values to run: on -> (True,), off -> (False,), both."""
    try:
        return WINDOW_SETTINGS[choice]
    except KeyError:
        raise ValueError(f"--window must be one of {', '.join(WINDOW_SETTINGS)}, got "
                         f"{choice!r}.") from None


def row_label(row: dict) -> str:
    """The name a row goes by in tables and charts: its ``impl``, plus ``window off`` for a row
    of our implementations measured without exact ALiBi windowing (``window`` False; True, the
    default, and None, where it does not apply or rows predate the field, add nothing), so that
    on and off rows of one shape stay apart; ``"always"`` adds ``window always``."""
    suffix = {False: WINDOW_OFF, "always": WINDOW_ALWAYS}
    return row["impl"] + suffix.get(row.get("window"), "")


def first_line(err: BaseException) -> str:
    """The first line of an error's message (at most 300 characters), for a row's reason."""
    text = str(err).strip().splitlines()
    return text[0][:300] if text else type(err).__name__


def is_out_of_memory(err: BaseException) -> bool:
    return isinstance(err, (MemoryError, torch.OutOfMemoryError)) or (
        isinstance(err, RuntimeError) and ("out of memory" in str(err).lower()
                                           or "can't allocate memory" in str(err).lower()))


def new_document(kind: str, argv: Sequence[str], env: dict, settings: dict) -> dict:
    """An empty result document for a run of ``COMMAND argv``."""
    return {
        "schema": SCHEMA,
        "kind": kind,
        "command": f"{COMMAND} " + shlex.join(list(argv)),
        "argv": list(argv),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "environment": env,
        "settings": settings,
        "conventions": {"flops": " ".join(flops.__doc__.split()),
                        "time_and_memory": " ".join(measure.__doc__.split())},
        "rows": [],
    }


def write_results(document: dict, path: str | Path) -> tuple[Path, Path]:
    """Write ``path`` (.json) and the same stem with .csv, each atomically; returns both."""
    json_path = Path(path)
    if json_path.suffix != ".json":
        json_path = json_path.with_suffix(".json")
    csv_path = json_path.with_suffix(".csv")
    json_path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(document, indent=1) + "\n"
    atomic_write(json_path, lambda stream: stream.write(text.encode("utf-8")))
    rows = document["rows"]
    fields = list(dict.fromkeys(key for row in rows for key in row)) if rows else []
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=fields)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: " ".join(map(str, v)) if isinstance(v, list) else v
                         for k, v in row.items()})
    atomic_write(csv_path, lambda stream: stream.write(table.getvalue().encode("utf-8")))
    return json_path, csv_path


def load_results(path: str | Path) -> dict:
    """Read one result document."""
    document = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(document, dict) or "rows" not in document:
        raise ValueError(f"{path} is not a benchmark result file (no 'rows').")
    return document


def summarize(rows: list[dict]) -> int:
    """Print the status counts; the exit status: 1 if a row failed or is out of tolerance."""
    counts = {s: sum(r.get("status") == s for r in rows) for s in ("ok", "unsupported", "failed")}
    bad = sum(r.get("within_tolerance") is False for r in rows)
    print(f"# {len(rows)} rows: {counts['ok']} ok, {counts['unsupported']} unsupported, "
          f"{counts['failed']} failed, {bad} out of tolerance", flush=True)
    return 1 if counts["failed"] or bad else 0
