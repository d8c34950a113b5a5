"""Timers and memory figures (mosaic_encoder.bench.measure), checked on hand-computed cases.
No timing is ever asserted."""

import json
import subprocess
import sys

import torch

from mosaic_encoder.bench.measure import peak_memory

CPU = torch.device("cpu")
MIB = 2 ** 20


def test_peak_memory_hand_computed():
    def allocate():
        a = torch.empty(MIB // 4)          # 1 MiB
        b = torch.empty(2 * MIB // 4)      # 2 MiB, 3 MiB live
        del a                              # 2 MiB live
        c = torch.empty(3 * MIB // 4)      # 3 MiB more: 5 MiB live, the peak
        return b, c

    kept = torch.empty(4 * MIB // 4)  # allocated before the call: not counted
    result, peak, method = peak_memory(allocate, CPU)
    assert "profiler" in method
    assert 5 * MIB <= peak <= 5 * MIB + 4096
    assert [t.numel() * 4 for t in result] == [2 * MIB, 3 * MIB]
    del kept


def test_peak_rss_of_a_child_process_hand_computed():
    """ru_maxrss of a fresh process rises to its RSS plus a tensor allocated (and touched) in it.

    The block is sized to end 256 MiB above the process's earlier high-water mark, which imports
    can leave well above the current RSS (a fresh virtual environment compiles bytecode).
    """
    code = (
        "import json, torch\n"
        "from mosaic_encoder.bench.measure import current_rss_bytes, max_rss_bytes\n"
        "before = current_rss_bytes()\n"
        "size = (max(max_rss_bytes() - before, 0) + 256 * 2**20) // 4 * 4\n"
        "block = torch.ones(size // 4)\n"
        "print(json.dumps([before, size, max_rss_bytes()]))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=120)
    before, size, peak = json.loads(done.stdout.strip().splitlines()[-1])
    assert size <= peak - before <= size + 48 * MIB


def test_interleaved_timings_take_turns_and_stop_at_the_time_budget():
    """Each round calls every function once, in turn; a call slower than min_sample_s keeps its
    sizing call as its first sample; max_time stops the rounds after one sample each."""
    import time

    from mosaic_encoder.bench.measure import interleaved_timings

    order = []

    def sleeper(name):
        def call():
            order.append(name)
            time.sleep(0.002)
        return call
    calls = {"a": sleeper("a"), "b": sleeper("b")}
    timings = interleaved_timings(calls, CPU, rounds=3, min_sample_s=0.001)
    assert order == ["a", "b"] * 3
    assert {name: t.samples for name, t in timings.items()} == {"a": 3, "b": 3}
    assert all(t.median_s >= 0.002 and t.timer == "interleaved rounds" for t in timings.values())
    order.clear()
    timings = interleaved_timings(calls, CPU, rounds=5, max_time=0.0, min_sample_s=0.001)
    assert order == ["a", "b"] and {t.samples for t in timings.values()} == {1}
