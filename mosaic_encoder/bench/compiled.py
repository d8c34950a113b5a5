"""Compiled encoders against eager, in one process: regional and whole-model ``torch.compile``,
and onnxruntime.

``python -m mosaic_encoder.bench compiled [--model DIR] [--batches 1,2,16] [--lengths
128,512,2048] [--variants regional,whole,onnxruntime] --out FILE.json``. For each batch size and
length, one batch of full-length rows and one of mixed lengths (uniform in [length / 8, length],
padded) run through each variant:

- ``eager``: the model as loaded (packed tokens, exact ALiBi windowing);
- ``regional``: :class:`~mosaic_encoder.regions.CompiledRegions`, what ``SentenceEncoder(compile=
  True)`` and ``encode --compile`` run: each layer's token-wise work compiled, packed attention
  eager, inductor's freezing on the CPU, and only what pays compiled;
- ``whole``: ``torch.compile(model, fullgraph=True, dynamic=True)``, one graph over the padded
  rows (:mod:`mosaic_encoder.padding`);
- ``onnxruntime``: the model's ``export-onnx`` file (CPU only), padded rows too.

Variants are timed in turns within each row (:func:`~.measure.interleaved_timings`: medians of
rounds, every round timing each variant once, over 5 s at least), after warm-up calls (for
``regional``, the forwards that decide what pays at the row's size). The padded variants skip
rows whose dense scores would exceed ``--max-dense-bytes``. The first call of each compiled
variant is timed once (``--fresh-cache``: with an empty inductor cache, a cold compile); graphs
compiled after that first call are counted as recompilations. Each row records the CPU
capability and the load average beside its times: on a shared machine the load moves every
figure.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..atomic import atomic_write
from ..attention import resolve_impl
from ..config import MosaicConfig
from ..dtypes import DTYPES
from ..errors import InputError
from ..export import export_onnx
from ..loading import load_model
from ..models import unwrap_encoder
from ..pretraining.initialise import new_masked_lm
from ..regions import CALIBRATION_FORWARDS, CompiledRegions
from .measure import default_max_dense_bytes, environment, interleaved_timings, resolve_device
from .names import IMPLEMENTATIONS

VARIANTS = IMPLEMENTATIONS["compiled"]
MIN_ROW_TIME = 5.0  # seconds of rounds per row at least: quick rows get more samples
# Every variant's output within this of eager's (float32); bfloat16 rounds to 2^-8 relative.
TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 0.1, torch.float16: 0.02}


def _batch(batch: int, length: int, mixed: bool, seed: int, device: torch.device
           ) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 20000, (batch, length), generator=generator)
    lengths = torch.randint(length // 8, length + 1, (batch,), generator=generator) if mixed \
        else torch.full((batch,), length)
    mask = (torch.arange(length) < lengths[:, None]).long()
    return (ids * mask).to(device), mask.to(device)


def _dense_bytes(batch: int, length: int, heads: int) -> int:
    """Float32 bytes of the padded variants' largest attention temporaries: (B, heads, S, S)
    scores, their masked copy and the probabilities."""
    return 3 * 4 * batch * heads * length * length


def _counting(call: Callable, made: list[int]) -> Callable:
    """``call``, appending to ``made`` the number of graphs each of its calls compiled."""
    from torch._dynamo.utils import counters

    def counted(*args):
        before = counters["stats"]["unique_graphs"]
        out = call(*args)
        made.append(counters["stats"]["unique_graphs"] - before)
        return out
    return counted


def _inductor_settings(device: torch.device, backend: str) -> dict:
    """What the compiled variants ran with: inductor's freezing for the regions on the CPU."""
    import torch._inductor.config as inductor

    return {"backend": backend, "regional_freezing": backend == "inductor" and
            device.type == "cpu", "whole_freezing": inductor.freezing,
            "max_autotune": inductor.max_autotune, "cpp_threads": torch.get_num_threads()}


def load_encoder(model_dir: Path | None, config_file: Path | None, *, device: torch.device,
                 dtype: torch.dtype, attention: str) -> nn.Module:
    """The encoder of checkpoint ``model_dir``, or of ``config_file`` with ``init``'s random
    weights (no file written: what a GPU run needs quickly), in eval mode."""
    if config_file is None:
        return unwrap_encoder(load_model(model_dir, dtype=dtype, device=device,
                                         attention=attention))
    config = MosaicConfig.from_json_file(config_file).replace(
        attention_impl=resolve_impl(attention, device))
    return new_masked_lm(config).bert.to(device=device, dtype=dtype).eval()


def measure(model_dir: Path | None, batches: list[int], lengths: list[int], variants: list[str],
            *, device: torch.device, dtype: torch.dtype, attention: str, rounds: int,
            max_time: float, max_dense_bytes: float, backend: str = "inductor",
            config_file: Path | None = None,
            progress: Callable[[dict], None] | None = None) -> dict:
    """Rows of every variant's median seconds against eager, for each shape and padding;
    ``progress`` receives the result so far after each row."""
    from torch._dynamo.utils import counters

    model = load_encoder(model_dir, config_file, device=device, dtype=dtype, attention=attention)
    heads = model.config.num_attention_heads
    calls = {"eager": model}
    regions = None
    if "regional" in variants:
        calls["regional"] = regions = CompiledRegions(model, backend=backend)
    if "whole" in variants:
        calls["whole"] = torch.compile(model, fullgraph=True, dynamic=True, backend=backend)
    onnx_seconds = session = None
    if "onnxruntime" in variants:
        import onnxruntime

        with tempfile.TemporaryDirectory() as scratch:
            start = time.perf_counter()
            onnx_file = export_onnx(model_dir, Path(scratch) / "model.onnx",
                                    token_types=False).path
            onnx_seconds = time.perf_counter() - start
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = torch.get_num_threads()  # as many as torch's
            session = onnxruntime.InferenceSession(str(onnx_file), options,
                                                   providers=["CPUExecutionProvider"])
    counters.clear()  # the export traced graphs of its own
    graphs = {name: [] for name in calls if name != "eager"}  # graphs made by each call
    for name in graphs:
        calls[name] = _counting(calls[name], graphs[name])
    result = {"model": str(config_file or model_dir), "dtype": str(dtype).removeprefix("torch."),
              "attention": model.config.attention_impl, "variants": variants,
              "inductor": _inductor_settings(device, backend),
              "environment": environment(device), "onnx_export_s": onnx_seconds,
              "first_compile_s": {}, "rows": []}
    with torch.inference_mode():
        for batch in batches:
            for length in lengths:
                for mixed in (False, True):
                    ids, mask = _batch(batch, length, mixed, seed=batch * length, device=device)
                    result["rows"].append(_row(
                        calls, regions, session, ids, mask, mixed, heads,
                        result["first_compile_s"], device=device, dtype=dtype, rounds=rounds,
                        max_time=max_time, max_dense_bytes=max_dense_bytes))
                    print(_describe(result["rows"][-1]), flush=True)
                    result["graphs"] = {name: made[0] for name, made in graphs.items() if made}
                    result["recompiles"] = {name: sum(made[1:]) for name, made in graphs.items()
                                            if made}
                    result["regional_decisions"] = None if regions is None else {
                        f"{name} attention, {1 << (size - 1)}-{(1 << size) - 1} tokens":
                        trial.pays for (name, size), trial in sorted(regions.trials.items())}
                    if progress is not None:
                        progress(result)
    return result


def _row(calls: dict, regions: CompiledRegions | None, session, ids: torch.Tensor,
         mask: torch.Tensor, mixed: bool, heads: int, first_compile: dict, *,
         device: torch.device, dtype: torch.dtype, rounds: int, max_time: float,
         max_dense_bytes: float) -> dict:
    """One shape and padding: warm every variant, check its output, time them in turns."""
    batch, length = ids.shape
    load_before = os.getloadavg()[0]
    dense = _dense_bytes(batch, length, heads) <= max_dense_bytes
    timed = {name: (lambda call=call: call(ids, mask)) for name, call in calls.items()
             if name != "whole" or dense}
    if session is not None and dense:
        feeds = {"input_ids": ids.cpu().numpy(), "attention_mask": mask.cpu().numpy()}
        timed["onnxruntime"] = lambda: session.run(["last_hidden_state"], feeds)
    for name, call in timed.items():
        if name in ("regional", "whole") and name not in first_compile:
            start = time.perf_counter()
            call()
            first_compile[name] = time.perf_counter() - start
    reference = timed["eager"]().last_hidden_state.float()
    differences = {}
    for name, call in timed.items():
        if name == "eager":
            continue
        for _ in range(CALIBRATION_FORWARDS if name == "regional" else 0):
            call()  # the forwards that decide which regions pay at this size
        out = call()
        out = torch.from_numpy(out[0]) if name == "onnxruntime" else out.last_hidden_state
        differences[name] = (out.float().cpu() - reference.cpu()).abs().max().item()
    timings = interleaved_timings(timed, device, rounds=rounds, max_time=max_time,
                                  min_time=min(MIN_ROW_TIME, max_time))
    eager = timings["eager"].median_s
    row = {"batch": batch, "length": length, "padding": "mixed" if mixed else "none",
           "real_tokens": int(mask.sum()),
           "cpu_capability": torch.backends.cpu.get_cpu_capability(),
           "threads": torch.get_num_threads(), "load_average": [load_before, os.getloadavg()[0]],
           "samples": timings["eager"].samples, "eager_s": eager}
    for name, timing in timings.items():
        if name != "eager":
            row[f"{name}_s"] = timing.median_s
            row[f"{name}_speedup"] = eager / timing.median_s
            row[f"{name}_max_abs_diff"] = differences[name]
    if regions is not None:
        size = int(mask.sum()).bit_length()
        row["regional_compiled"] = {name: regions.trials[name, size].pays
                                    for name in ("before", "after")}
    skipped = [name for name in ("whole", "onnxruntime")
               if (name in calls or (name == "onnxruntime" and session is not None))
               and name not in timed]
    if skipped:
        row["skipped"] = {name: "dense scores above --max-dense-bytes" for name in skipped}
    row["tolerance"] = TOLERANCE[dtype]
    row["within_tolerance"] = all(value <= (1e-4 if name == "onnxruntime" else TOLERANCE[dtype])
                                  for name, value in differences.items())
    return row


def _describe(row: dict) -> str:
    parts = [f"batch {row['batch']:>3} x {row['length']:<5} padding {row['padding']:<5} "
             f"eager {row['eager_s']:8.3f} s"]
    for name in VARIANTS:
        if f"{name}_s" in row:
            parts.append(f"{name} {row[f'{name}_s']:8.3f} s ({row[f'{name}_speedup']:.2f}x)")
    load = row["load_average"]
    parts.append(f"[{row['cpu_capability']}, load {load[0]:.1f}-{load[1]:.1f}]")
    return "  ".join(parts)


def run(args: argparse.Namespace) -> int:
    """The ``compiled`` subcommand (options: :mod:`.cli`): returns the exit status, 1 when a
    variant's output is out of tolerance."""
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(args.threads or threads)
        return _run(args)
    finally:
        torch.set_num_threads(threads)


def _run(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    variants = args.variants or (list(VARIANTS) if device.type == "cpu" and not args.config
                                 else ["regional", "whole"])
    if "onnxruntime" in variants and (device.type != "cpu" or args.config):
        raise InputError("--variants onnxruntime runs on the CPU and from --model only.")
    settings = {key: str(value) if isinstance(value, Path) else value
                for key, value in vars(args).items() if key not in ("run", "command")}

    def write(result: dict) -> None:  # after every row: a run cut short keeps its rows
        text = json.dumps({**result, "settings": settings}, indent=1) + "\n"
        atomic_write(args.out, lambda stream: stream.write(text.encode()))
    with tempfile.TemporaryDirectory() as cache:
        if args.fresh_cache:
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
        result = measure(None if args.config else args.model, args.batches, args.lengths,
                         variants, device=device, dtype=DTYPES[args.dtype],
                         attention=args.attention, rounds=args.min_samples,
                         max_time=args.max_time,
                         max_dense_bytes=args.max_dense_bytes or default_max_dense_bytes(device),
                         backend=args.backend, config_file=args.config, progress=write)
    compiles = ", ".join(f"{name} {seconds:.1f} s ({result['graphs'][name]} graphs, then "
                         f"{result['recompiles'][name]} recompilation(s))"
                         for name, seconds in result["first_compile_s"].items())
    print(f"first compile: {compiles}"
          + (f"; ONNX export {result['onnx_export_s']:.1f} s" if result["onnx_export_s"] else ""))
    return 0 if all(row["within_tolerance"] for row in result["rows"]) else 1
