"""Whole-model benchmark: tokens/s and peak memory of a full encoder forward, against upstream's
dense computation run in the same invocation.

``python -m mosaic_encoder.bench model`` (or ``mosaic-encoder bench model``). Two kinds of rows:

* ``single``: one batch of ``--batch`` sequences of L tokens, for each L of ``--lengths``;
* ``corpus``: encoding a synthetic mixed-length corpus (``--corpus-docs`` token sequences with
  lengths drawn log-uniformly from [``--corpus-min-len``, ``--corpus-max-len``]), sorted by
  length and batched by ``--corpus-batch-size`` as sentence-transformers does
  (:func:`mosaic_encoder.batching.length_sorted_batches`), then mean-pooled
  (:class:`mosaic_encoder.pooling.Pooling`) and L2-normalised.

Implementations: ``ours-<attention>`` (the package's model, attention ``sdpa`` or ``triton``) and
``baseline``: :class:`mosaic_encoder.baseline.UpstreamStyleEncoder` over the same weights (dense
padded computation, a (heads, N, N) float32 ALiBi table built at construction for
N = ``--alibi-starting-size``, reported as ``state_bytes``). The weights are random (seeded) for
the default BERT-base geometry (768 hidden, 12 heads, 12 layers, GLU 3072, vocab 30528), or
loaded with ``--checkpoint DIR``. Nothing is downloaded. ``--window`` sets the model's
``attention_window`` (exact ALiBi windowing): on (the default), off, or both, an ``ours`` row for
each, recorded in the row's ``window``; the baseline, which has no windowing, runs once per case.

Each measurement's first call runs under the memory measurement (and warms up); then
:func:`.measure.time_call` times it. With ``--isolate`` every measurement runs in a fresh child
process (``python -m mosaic_encoder.bench.model SPEC_JSON``, this module), which also reports its peak resident set size (``ru_maxrss``) and its RSS just
before the first call; without it, everything runs in this process and each ``ours`` row also
carries its largest difference from the baseline's output.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import subprocess
import sys
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..attention import resolve_impl
from ..baseline import UpstreamStyleEncoder
from ..batching import length_sorted_batches
from ..config import MosaicConfig
from ..dtypes import DTYPES
from ..errors import MosaicError
from ..loading import load_model
from ..models import MosaicBertModel, unwrap_encoder
from ..pooling import Pooling
from .measure import (current_rss_bytes, default_max_dense_bytes, environment, gib,
                      max_rss_bytes, peak_memory, release, resolve_device, time_call)
from .names import IMPLEMENTATIONS
from .results import (Unsupported, first_line, is_out_of_memory, new_document, row_label,
                      window_settings, write_results)

MODEL_IMPLS = IMPLEMENTATIONS["model"]
DEFAULT_MODEL_LENGTHS = {"cpu": (512, 2048, 4096), "cuda": (512, 2048, 4096, 8192)}
ROW_MARKER = "@@bench-row "

MODEL_FIELDS = (
    "kind", "impl", "attention", "window", "case", "seqlen", "batch", "num_seqs", "real_tokens",
    "padded_tokens", "dtype", "geometry", "checkpoint", "status", "reason", "notes",
    "time_s", "time_s_events", "timer", "samples", "tokens_per_s", "speedup_vs_baseline",
    "peak_bytes", "memory_method", "state_bytes", "model_bytes", "isolated", "rss_before_bytes",
    "peak_rss_bytes", "max_abs_diff_vs_baseline", "device", "torch", "triton", "seqlens")


def corpus_lengths(docs: int, min_len: int, max_len: int, seed: int = 0) -> list[int]:
    """Token counts of a synthetic corpus, log-uniform in [min_len, max_len], deterministic."""
    rng = random.Random(seed * 1_000_003 + docs * 31 + max_len)
    low, high = math.log(max(1, min_len)), math.log(max(min_len, max_len))
    return [round(math.exp(rng.uniform(low, high))) for _ in range(docs)]


# --------------------------------------------------------------------------------------------
# Building models and inputs
# --------------------------------------------------------------------------------------------

def build_model(spec: dict, device: torch.device) -> MosaicBertModel:
    """The encoder described by ``spec`` (checkpoint or random geometry, ``attention`` and
    ``window``), eval mode."""
    dtype = DTYPES[spec["dtype"]]
    if spec.get("checkpoint"):
        model = unwrap_encoder(load_model(spec["checkpoint"], dtype=dtype, device=device,
                                          attention=spec["attention"],
                                          attention_window=spec["window"]))
    else:
        geometry = spec["geometry"]
        config = MosaicConfig(vocab_size=geometry["vocab"], hidden_size=geometry["hidden"],
                              num_hidden_layers=geometry["layers"],
                              num_attention_heads=geometry["heads"],
                              intermediate_size=geometry["intermediate"],
                              attention_impl=spec["attention"],
                              attention_window=spec["window"])
        torch.manual_seed(spec["seed"])
        model = MosaicBertModel(config, add_pooler=True).to(device=device, dtype=dtype)
    return model.eval()


def make_batches(spec: dict, vocab: int, device: torch.device
                 ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(input_ids, attention_mask) padded batches of the row's case; right padding with id 0."""
    generator = torch.Generator().manual_seed(spec["seed"] + 1)
    if spec["case"] == "single":
        groups = [[spec["seqlen"]] * spec["batch"]]
    else:
        lengths = spec["seqlens"]
        groups = [[lengths[i] for i in batch]
                  for batch in length_sorted_batches(lengths, spec["corpus_batch_size"])]
    batches = []
    for group in groups:
        width = max(group)
        ids = torch.randint(1000, vocab, (len(group), width), generator=generator)
        mask = (torch.arange(width)[None, :] < torch.tensor(group)[:, None]).to(torch.int64)
        batches.append(((ids * mask).to(device), mask.to(device)))
    return batches


def _runner(impl: str, model, baseline, batches, case: str):
    """The timed call: forward over every batch (corpus: plus mean pooling and L2 norm)."""

    def forward(ids, mask):
        if impl == "baseline":
            return baseline(ids, mask)
        return model(ids, mask).last_hidden_state

    mean = Pooling(("mean_tokens",))

    @torch.inference_mode()
    def run():
        outputs = []
        for ids, mask in batches:
            hidden = forward(ids, mask)
            if case == "corpus":
                outputs.append(F.normalize(mean(hidden, mask).float(), dim=-1))
            else:
                outputs.append(hidden)
        return outputs
    return run


def _real_outputs(outputs: list[torch.Tensor], batches, case: str) -> torch.Tensor:
    """Concatenate outputs over real tokens (single) or documents (corpus), as float64."""
    if case == "corpus":
        return torch.cat([o.double() for o in outputs])
    return torch.cat([o[m.bool()].double() for o, (_, m) in zip(outputs, batches)])


# --------------------------------------------------------------------------------------------
# One measurement
# --------------------------------------------------------------------------------------------

def _base_row(spec: dict, env: dict) -> dict:
    row = dict.fromkeys(MODEL_FIELDS)
    seqlens = [spec["seqlen"]] * spec["batch"] if spec["case"] == "single" else spec["seqlens"]
    if spec["case"] == "single":
        padded = spec["seqlen"] * spec["batch"]
    else:
        padded = sum(len(b) * max(seqlens[i] for i in b)
                     for b in length_sorted_batches(seqlens, spec["corpus_batch_size"]))
    geometry = spec.get("geometry") or {}
    row.update(kind="model", impl=spec["impl"], case=spec["case"], seqlen=max(seqlens),
               batch=spec["batch"] if spec["case"] == "single" else spec["corpus_batch_size"],
               num_seqs=len(seqlens), real_tokens=sum(seqlens), padded_tokens=padded,
               dtype=spec["dtype"], checkpoint=spec.get("checkpoint"),
               geometry=None if spec.get("checkpoint") else
               "{hidden}/{heads}/{layers} GLU {intermediate} vocab {vocab}".format(**geometry),
               window=spec["window"] if spec["impl"] == "ours" else None,
               isolated=bool(spec.get("isolated")), device=env["device"], torch=env["torch"],
               triton=env["triton"], seqlens=seqlens if spec["case"] == "corpus" else None)
    return row


class ModelCache:
    """The models and baseline shared by in-process measurements: one model per ``window``
    setting (the same seeded or loaded weights), the baseline over the first one built."""

    def __init__(self):
        self.models: dict[bool, MosaicBertModel] = {}
        self.baseline = None

    def model(self, spec: dict, device: torch.device) -> MosaicBertModel:
        """The model of ``spec``'s window setting (any one for the baseline), built once."""
        if spec["impl"] != "ours" and self.models:
            return next(iter(self.models.values()))
        if spec["window"] not in self.models:
            self.models[spec["window"]] = build_model(spec, device)
        return self.models[spec["window"]]


def measure_model(spec: dict, device: torch.device, env: dict, cache: ModelCache | None = None,
                  keep_outputs: bool = False) -> tuple[dict, torch.Tensor | None]:
    """Measure one (implementation, case); returns (row, real outputs when asked)."""
    row = _base_row(spec, env)
    cache = cache or ModelCache()
    outputs = None
    try:
        if spec["impl"] == "ours":
            row["attention"] = resolve_impl(spec["attention"], device)
            row["impl"] = f"ours-{row['attention']}"
        else:
            row["attention"] = "dense (upstream-style)"
            _check_baseline_budget(spec, row)
        model = cache.model(spec, device)
        row["model_bytes"] = sum(p.numel() * p.element_size() for p in model.parameters())
        baseline = None
        if spec["impl"] == "baseline":
            if cache.baseline is None:
                cache.baseline = UpstreamStyleEncoder(model, spec["alibi_starting_size"])
            baseline = cache.baseline
            row["state_bytes"] = baseline.alibi.nbytes
        else:
            row["state_bytes"] = 0
        batches = make_batches(spec, model.config.vocab_size, device)
        run = _runner(spec["impl"], model, baseline, batches, spec["case"])
        def timed():
            return time_call(run, device, min_run_time=spec["min_run_time"],
                             min_samples=spec["min_samples"], max_time=spec["max_row_time"],
                             gpu_reps=spec["min_samples"])

        if spec.get("isolated"):
            # Timed calls first, then the process's high-water mark: the profiler's own
            # bookkeeping in the memory-measuring call below must not count as the model's RSS.
            row["rss_before_bytes"] = current_rss_bytes()
            timing = timed()
            row["peak_rss_bytes"] = max_rss_bytes()
        results, row["peak_bytes"], row["memory_method"] = peak_memory(run, device)
        if baseline is not None:  # the table grows inside the call when the batch is longer
            row["state_bytes"] = baseline.alibi.nbytes
        if keep_outputs:
            outputs = _real_outputs(results, batches, spec["case"])
        del results
        if not spec.get("isolated"):
            timing = timed()
        row.update(status="ok", time_s=timing.median_s, time_s_events=timing.events_median_s,
                   timer=timing.timer, samples=timing.samples,
                   tokens_per_s=row["real_tokens"] / timing.median_s)
    except KeyboardInterrupt:
        raise
    except Exception as err:  # noqa: BLE001 - every failure becomes a row
        if isinstance(err, Unsupported):
            row.update(status="unsupported", reason=str(err))
        elif isinstance(err, MosaicError) or is_out_of_memory(err):
            row.update(status="unsupported", reason=f"{type(err).__name__}: {first_line(err)}")
        else:
            row.update(status="failed", reason=f"{type(err).__name__}: {first_line(err)}")
    finally:
        release(device)
    return row, outputs


def _check_baseline_budget(spec: dict, row: dict) -> None:
    geometry = spec.get("geometry") or {}
    heads = geometry.get("heads", 12)
    width = row["seqlen"]
    batch = row["num_seqs"] if spec["case"] == "single" else spec["corpus_batch_size"]
    table = max(width, spec["alibi_starting_size"])
    need = 4 * heads * (4 * batch * width * width + table * table)
    if need > spec["max_dense_bytes"]:
        raise Unsupported(f"the dense baseline would materialise about {gib(need)} of "
                           f"(B, heads, S, S) tensors and ALiBi table, above --max-dense-gib "
                           f"{gib(spec['max_dense_bytes'])}")


# --------------------------------------------------------------------------------------------
# Isolation in child processes
# --------------------------------------------------------------------------------------------

def run_isolated(spec: dict, timeout: float | None = None) -> dict:
    """Run one measurement in a fresh ``python -m mosaic_encoder.bench.model`` process.

    The child imports this package the way this process did (installed, or through the
    caller's own PYTHONPATH): nothing is added to its environment.
    """
    spec = dict(spec, isolated=True)
    command = [sys.executable, "-m", __name__, json.dumps(spec)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"status": "failed", "reason": f"child process exceeded {timeout} s"}
    for line in done.stdout.splitlines():
        if line.startswith(ROW_MARKER):
            return json.loads(line[len(ROW_MARKER):])
    tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
    reason = f"child process exited with status {done.returncode}: {tail[0][:300]}"
    if done.returncode in (-9, 137):
        reason = f"child process was killed (status {done.returncode}; out of memory?)"
    return {"status": "failed", "reason": reason}


def child_main(argv: list[str]) -> int:
    """``python -m mosaic_encoder.bench.model SPEC_JSON``: one measurement, one marked line."""
    spec = json.loads(argv[0])
    device = torch.device(spec["device"])
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    row, _ = measure_model(spec, device, environment(device))
    print(ROW_MARKER + json.dumps(row), flush=True)
    return 0


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------

def run_model(args: argparse.Namespace, argv: Sequence[str]) -> dict:
    """Run the cases described by ``args`` (parsed by :mod:`.cli`); returns the document."""
    device = resolve_device(args.device)
    kind = device.type
    if args.threads:
        torch.set_num_threads(args.threads)
    lengths = args.lengths or ((128,) if args.quick else DEFAULT_MODEL_LENGTHS[kind])
    docs = args.corpus_docs if args.corpus_docs is not None else \
        (8 if args.quick else (32 if kind == "cpu" else 1024))
    max_len = args.corpus_max_len or (128 if args.quick else 512 if kind == "cpu" else 4096)
    min_samples = args.min_samples or (1 if args.quick else 3)
    base_spec = dict(
        device=str(device), dtype=args.dtype or ("float32" if kind == "cpu" else "bfloat16"),
        attention=args.attention, checkpoint=str(args.checkpoint) if args.checkpoint else None,
        geometry=None if args.checkpoint else dict(hidden=args.hidden, layers=args.layers,
                                                   heads=args.heads,
                                                   intermediate=args.intermediate,
                                                   vocab=args.vocab),
        seed=args.seed, batch=args.batch, alibi_starting_size=args.alibi_starting_size,
        corpus_batch_size=args.corpus_batch_size, min_samples=min_samples,
        min_run_time=args.min_run_time,
        max_row_time=args.max_row_time if args.max_row_time is not None else 30.0,
        max_dense_bytes=args.max_dense_gib * 2 ** 30 if args.max_dense_gib
        else default_max_dense_bytes(device), threads=args.threads)
    windows = window_settings(args.window)
    cases = [dict(case="single", seqlen=length) for length in lengths]
    if docs > 0:
        seqlens = corpus_lengths(docs, args.corpus_min_len, max_len, args.seed)
        cases.append(dict(case="corpus", seqlen=max(seqlens), seqlens=seqlens))
    env = environment(device)
    settings = dict(base_spec, lengths=list(lengths), corpus_docs=docs,
                    corpus_min_len=args.corpus_min_len, corpus_max_len=max_len,
                    impls=args.impls, isolate=args.isolate, window=args.window)
    document = new_document("model", argv, env, settings)
    print(f"# {env['device']} | torch {env['torch']} | triton {env['triton']}", flush=True)
    cache = ModelCache()
    for case in cases:
        case_rows, outputs = {}, {}
        for impl in args.impls:
            # The baseline has no windowing: one row per case whatever --window says.
            for window in windows if impl == "ours" else windows[:1]:
                spec = dict(base_spec, impl=impl, window=window, **case)
                key = (impl, window if impl == "ours" else None)
                if args.isolate:
                    row = dict(_base_row(spec, env), isolated=True)
                    row.update(run_isolated(spec))
                else:
                    row, outputs[key] = measure_model(spec, device, env, cache,
                                                      keep_outputs=True)
                case_rows[key] = row
        _compare(case_rows, outputs)
        for row in case_rows.values():
            document["rows"].append(row)
            print(format_model_row(row), flush=True)
        if args.out:
            write_results(document, args.out)
    return document


def _compare(rows: dict[tuple, dict], outputs: dict[tuple, torch.Tensor | None]) -> None:
    """Fill speedup and output difference of each ``ours`` row (keyed ``("ours", window)``)
    against the ``("baseline", None)`` row."""
    key = ("baseline", None)
    base = rows.get(key)
    if base is None or base.get("status") != "ok":
        return
    base["speedup_vs_baseline"] = 1.0
    for (impl, window), ours in rows.items():
        if impl != "ours" or ours.get("status") != "ok":
            continue
        ours["speedup_vs_baseline"] = base["time_s"] / ours["time_s"]
        a, b = outputs.get((impl, window)), outputs.get(key)
        if a is not None and b is not None and a.shape == b.shape:
            ours["max_abs_diff_vs_baseline"] = float((a - b).abs().max()) if a.numel() else 0.0


def format_model_row(row: dict) -> str:
    head = (f"{row_label(row):<27} {row['case']:<7} L={row['seqlen']:<6} "
            f"tokens={row['real_tokens']:<7} {row['dtype']:<8}")
    if row.get("status") != "ok":
        return f"{head} {str(row.get('status')).upper()}: {row.get('reason')}"
    extra = ""
    if row.get("speedup_vs_baseline") and not row["impl"] == "baseline":
        extra += f" x{row['speedup_vs_baseline']:.2f} vs baseline"
    if row.get("peak_rss_bytes"):
        extra += f" rss {gib(row['peak_rss_bytes'])}"
    if row.get("max_abs_diff_vs_baseline") is not None:
        extra += f" diff {row['max_abs_diff_vs_baseline']:.1e}"
    return (f"{head} {row['time_s']:9.3f} s {row['tokens_per_s']:10.1f} tok/s "
            f"peak {gib(row['peak_bytes']):>10}{extra}")


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]))
