"""Whole-model CPU forward with exact ALiBi windowing on vs off, one fresh process per measurement.

    python benchmarks/cpu/window_ab.py LENGTHS OUT.json THREADS on,off[,on...]

Each measurement runs the harness's own ``measure_model`` (median of up to 3 timed forwards, at
most 30 s of samples, then the peak-memory call) in a new process, as ``--isolate`` does, after
setting ``attention_window`` on every layer; the harness has no switch for it. BERT-base
geometry, random weights, float32, batch 1. Prints one JSON line per measurement, with the load
average before and after.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHILD = r'''
import json, sys, torch
from mosaic_encoder.bench.model import ModelCache, build_model, measure_model
from mosaic_encoder.bench.measure import environment
spec = json.loads(sys.argv[1])
torch.set_num_threads(spec["threads"])
device = torch.device("cpu")
cache = ModelCache()
cache.model = build_model(spec, device)
for layer in cache.model.encoder.layer:
    layer.attention.self.attention_window = spec["window"]
row, _ = measure_model(spec, device, environment(device), cache)
print("@@row " + json.dumps(dict(row, window=spec["window"])), flush=True)
'''
BASE = dict(device="cpu", dtype="float32", attention="sdpa", checkpoint=None,
            geometry=dict(hidden=768, layers=12, heads=12, intermediate=3072, vocab=30528),
            seed=0, batch=1, alibi_starting_size=4096, corpus_batch_size=32, min_samples=3,
            min_run_time=0.0, max_row_time=30.0, max_dense_bytes=8 << 30, impl="ours",
            case="single", isolated=True)


def main(lengths: str, out: str, threads: str, windows: str) -> None:
    rows = []
    for length in (int(x) for x in lengths.split(",")):
        for window in (w == "on" for w in windows.split(",")):
            spec = dict(BASE, seqlen=length, window=window, threads=int(threads))
            load, start = os.getloadavg(), time.time()
            done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec)], cwd=ROOT,
                                  capture_output=True, text=True,
                                  env=dict(os.environ, PYTHONPATH=str(ROOT)))
            row = next((json.loads(line[6:]) for line in done.stdout.splitlines()
                        if line.startswith("@@row ")),
                       {"status": "failed", "reason": done.stderr[-500:]})
            row.update(load_before=load, load_after=os.getloadavg(), wall_s=time.time() - start)
            rows.append(row)
            print(json.dumps({key: row.get(key) for key in (
                "seqlen", "window", "status", "reason", "time_s", "samples", "peak_rss_bytes",
                "load_before", "load_after", "wall_s")}), flush=True)
    Path(out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main(*sys.argv[1:5])
