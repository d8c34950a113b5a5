"""Result documents of the benchmarks: rows, their statuses, and the JSON and CSV files.

A document is one JSON object: ``schema``, ``kind`` (``attention`` or ``model``), ``command``,
``argv``, ``created`` (UTC), ``environment``, ``settings``, ``conventions`` (the FLOP and
measurement conventions, copied from :mod:`.flops` and :mod:`.measure`) and ``rows``. Every
measurement is a row whatever happened: ``status`` is ``ok``, ``unsupported`` (with a
``reason``: a combination that cannot run here) or ``failed`` (an unexpected error).
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

SCHEMA = "mosaic-encoder.bench/1"
COMMAND = "python -m mosaic_encoder.bench"


class Unsupported(Exception):
    """A combination this implementation, device or size cannot run; becomes a reasoned row."""


# "on" is the kernel's default (windowing where it pays, automatic); "always" forces the
# Triton kernel's windowing at every length (ours-sdpa treats it as on).
WINDOW_SETTINGS = {"on": (True,), "off": (False,), "both": (True, False), "always": ("always",),
                   "all": (True, "always", False)}
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
