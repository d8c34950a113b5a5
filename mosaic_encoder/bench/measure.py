"""Timing, peak memory and environment records for the benchmarks.

Time
    CPU: ``torch.utils.benchmark.Timer`` with all of torch's threads. A call that takes less than
    ``min_run_time / min_samples`` is timed with ``blocked_autorange(min_run_time)`` (many calls
    per sample); a slower one is timed ``min_samples`` times with ``timeit(1)``. The median is
    reported. GPU: the median of ``triton.testing.do_bench`` (primary) and, alongside, the median
    of ``reps`` calls bracketed by CUDA events.

Peak memory (``peak_bytes``)
    The largest amount of memory allocated *during one call* and not yet freed, counted from the
    allocator state just before the call: what the call itself needs for its temporaries and its
    outputs. Inputs, weights and state built before the call are excluded. CPU: torch has no
    allocator statistics, so the call runs under ``torch.profiler`` with ``profile_memory=True``,
    which records every allocation and free of torch's CPU allocator; the peak of their running
    sum in time order is the figure (memory outside torch's allocator, e.g. NumPy arrays of the
    Triton interpreter, is not seen). GPU: ``torch.cuda.max_memory_allocated()`` after
    ``reset_peak_memory_stats()``, minus ``memory_allocated()`` before the call.

Peak RSS (``peak_rss_bytes``)
    For whole-process figures: ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` of a fresh child
    process that ran one measurement (see :mod:`mosaic_encoder.bench.model`'s ``--isolate``).
"""

from __future__ import annotations

import gc
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..dtypes import native_cpu_bfloat16

# Kineto, torch's profiler backend, logs every profiler start and stop on stderr at its USDT
# level ("USDT: ... profiler_start/stop"), which ranks above ERROR (VERBOSE 0 ... ERROR 4, USDT
# 5), so only a level past all of them (6) silences it. Profiler failures still surface as
# Python exceptions. Read when the profiler first initialises, hence set at import; an explicit
# setting wins.
os.environ.setdefault("KINETO_LOG_LEVEL", "6")


@dataclass
class Timing:
    """Median time of a call and how it was obtained."""

    median_s: float
    samples: int
    timer: str
    events_median_s: float | None = None


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], object], device: torch.device, *, min_run_time: float = 1.0,
              min_samples: int = 3, max_time: float | None = None,
              gpu_reps: int = 30) -> Timing:
    """Median time of ``fn()``; ``fn`` must already be warm (compiled, caches filled).

    On CPU a first ``timeit(1)`` decides: if ``min_samples`` such calls take less than
    ``min_run_time``, ``blocked_autorange(min_run_time)`` times the call; otherwise that first
    call is the first of up to ``min_samples`` single-call samples, fewer once the samples add
    up to ``max_time`` seconds (at least one is always taken).
    """
    if device.type == "cuda":
        import triton.testing

        median_ms = triton.testing.do_bench(fn, return_mode="median")
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(gpu_reps)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(gpu_reps)]
        torch.cuda.synchronize(device)
        for start, end in zip(starts, ends):
            start.record()
            fn()
            end.record()
        torch.cuda.synchronize(device)
        events = statistics.median(s.elapsed_time(e) for s, e in zip(starts, ends)) / 1e3
        return Timing(median_ms / 1e3, gpu_reps, "triton.testing.do_bench", events)

    from torch.utils.benchmark import Timer

    timer = Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    first = timer.timeit(1).median
    if first * max(min_samples, 1) < min_run_time:
        measurement = timer.blocked_autorange(min_run_time=min_run_time)
        return Timing(measurement.median, len(measurement.times),
                      "torch.utils.benchmark.blocked_autorange")
    times = [first]
    while len(times) < min_samples and (max_time is None or sum(times) < max_time):
        times.append(timer.timeit(1).median)
    return Timing(statistics.median(times), len(times), "torch.utils.benchmark.timeit(1)")


def interleaved_timings(calls: dict[str, Callable[[], object]], device: torch.device, *,
                        rounds: int, max_time: float | None = None, min_time: float = 0.0,
                        min_sample_s: float = 0.05) -> dict[str, Timing]:
    """Median seconds per call of each of ``calls`` (warm), timed in turns.

    Every round times each call once, so that a change in the machine's load falls on all of
    them alike: on a shared machine, comparing medians of separate runs compares the load as
    much as the calls. A first round sizes the samples: a call quicker than ``min_sample_s`` is
    timed as a block of calls per sample from then on; a slower one keeps that first call as its
    first sample. Rounds go on until every call has ``rounds`` samples and the rounds took
    ``min_time`` seconds (more samples where calls are quick, and noise is large), and stop
    earlier once they took ``max_time`` seconds (one sample at least).
    """
    samples: dict[str, list[float]] = {name: [] for name in calls}
    repeats, spent = {}, 0.0
    for name, call in calls.items():
        _, seconds = wall_time(call, device)
        spent += seconds
        repeats[name] = math.ceil(min_sample_s / max(seconds, 1e-9))
        if repeats[name] == 1:
            samples[name].append(seconds)
    while (min(map(len, samples.values())) < rounds or spent < min_time) and \
            not (max_time is not None and spent >= max_time and min(map(len, samples.values()))):
        for name, call in calls.items():
            synchronize(device)
            start = time.perf_counter()
            for _ in range(repeats[name]):
                call()
            synchronize(device)
            seconds = time.perf_counter() - start
            spent += seconds
            samples[name].append(seconds / repeats[name])
    return {name: Timing(statistics.median(times), len(times), "interleaved rounds")
            for name, times in samples.items()}


def wall_time(fn: Callable[[], object], device: torch.device) -> tuple[object, float]:
    """Run ``fn`` once; its result and wall-clock seconds (device synchronised)."""
    synchronize(device)
    start = time.perf_counter()
    result = fn()
    synchronize(device)
    return result, time.perf_counter() - start


def _cpu_allocation_deltas(prof) -> list[tuple[int, int]]:
    """(time, signed bytes) of every CPU allocator event recorded by a profiler run."""
    try:
        from torch._C._profiler import _EventType

        def walk(nodes):
            for node in nodes:
                yield node
                yield from walk(node.children)

        events = []
        for node in walk(prof.profiler.kineto_results.experimental_event_tree()):
            if node.tag == _EventType.Allocation and node.extra_fields.device.type == "cpu":
                events.append((node.start_time_ns, int(node.extra_fields.alloc_size)))
        return events
    except (AttributeError, ImportError, RuntimeError):  # pragma: no cover - older torch
        raise RuntimeError("this torch's profiler does not expose allocation events") from None


def peak_memory(fn: Callable[[], object], device: torch.device) -> tuple[object, int, str]:
    """Run ``fn`` once; returns (its result, peak bytes allocated during the call, method)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        result = fn()
        torch.cuda.synchronize(device)
        return result, torch.cuda.max_memory_allocated(device) - before, \
            "cuda.max_memory_allocated"
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = fn()
    live = peak = 0
    for _, delta in sorted(_cpu_allocation_deltas(prof)):
        live += delta
        peak = max(peak, live)
    return result, peak, "torch.profiler (CPU allocator)"


def current_rss_bytes() -> int:
    """Resident set size of this process now (Linux ``/proc/self/statm``; else ru_maxrss)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return max_rss_bytes()


def max_rss_bytes() -> int:
    """High-water mark of this process's resident set size (``ru_maxrss``) in bytes."""
    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return value if sys.platform == "darwin" else value * 1024  # Linux reports KiB


def _git_commit() -> str | None:
    """The commit of the source tree this package runs from; None when installed from a wheel."""
    source = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=source, capture_output=True,
                              text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=source, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode:
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(module: str) -> str | None:
    try:
        return __import__(module).__version__
    except Exception:  # noqa: BLE001 - any import problem means "not available"
        return None


def environment(device: torch.device) -> dict:
    """Machine and software versions, stored once per result file."""
    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "triton": _version("triton"),
        "numpy": _version("numpy"),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_native_bfloat16": native_cpu_bfloat16(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_bytes": total_memory(),
        "device": device_name(device),
        "cuda": torch.version.cuda,
        "triton_interpret": os.environ.get("TRITON_INTERPRET") == "1",
        "git_commit": _git_commit(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env["gpu"] = props.name
        env["gpu_driver"] = _nvidia_driver()
        env["gpu_capability"] = f"{props.major}.{props.minor}"
        env["gpu_memory_bytes"] = props.total_memory
    return env


def _nvidia_driver() -> str | None:
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip().splitlines()[0] if done.returncode == 0 and done.stdout.strip() \
        else None


def resolve_device(name: str | None) -> torch.device:
    """The device named on the command line (default: cuda when available, else cpu)."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda was requested but no CUDA GPU is available.")
    if device.type not in ("cpu", "cuda"):
        raise SystemExit(f"error: --device must be cpu or cuda, got {name!r}.")
    return device


def default_max_dense_bytes(device: torch.device) -> float:
    """Default budget of dense implementations: GPU 80 % of its memory, CPU min(8 GiB, RAM/3)."""
    if device.type == "cuda":
        return 0.8 * torch.cuda.get_device_properties(device).total_memory
    return min(8 * 2 ** 30, (total_memory() or 24 * 2 ** 30) / 3)


def release(device: torch.device) -> None:
    """Free what the last measurement left, so the next one starts from the same state."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def device_name(device: torch.device) -> str:
    """A short name of the compute device: the GPU's name or 'cpu: <model> x<cores>'."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu: {_cpu_model()} x{os.cpu_count()}"


def total_memory() -> int | None:
    """Physical memory of this machine in bytes, or None where the OS does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def gib(nbytes: float | None) -> str:
    """Human-readable bytes for console tables."""
    if nbytes is None or (isinstance(nbytes, float) and math.isnan(nbytes)):
        return "-"
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(nbytes) >= size:
            return f"{nbytes / size:.1f} {unit}"
    return f"{int(nbytes)} B"
