"""``torch.compile`` and onnxruntime against eager, on whole encoders, measured in one run.

``python -m mosaic_encoder.bench compiled [--model DIR] [--batches 2,16] [--seqlen 512]
--out FILE.json``. For each batch size, one batch of full-length rows (the padded rows the
compiled path computes are then all real) and one of mixed lengths (uniform in [seqlen / 8,
seqlen], where the compiled path also computes the padding that eager skips) are timed eagerly,
compiled (inductor, ``fullgraph=True, dynamic=True``: one compilation serves every shape) and
through onnxruntime on an export of the same model. The first compiled call and the export are
timed once; recompilations are counted. Times are medians of :func:`~.measure.time_call`; the
environment records the CPU capability (``torch.backends.cpu.get_cpu_capability()``).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_write
from ..export import export_onnx, load_exportable
from .measure import environment, time_call


def _batch(batch: int, seqlen: int, mixed: bool, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 20000, (batch, seqlen), generator=generator)
    lengths = torch.randint(seqlen // 8, seqlen + 1, (batch,), generator=generator) if mixed \
        else torch.full((batch,), seqlen)
    mask = (torch.arange(seqlen) < lengths[:, None]).long()
    return ids * mask, mask


def measure(model_dir: Path, batches: list[int], seqlen: int, min_samples: int,
            backend: str = "inductor") -> dict:
    """Rows of eager, compiled and onnxruntime medians for each batch size and padding."""
    from torch._dynamo.utils import counters

    import onnxruntime

    device = torch.device("cpu")
    model = load_exportable(model_dir)
    compiled = torch.compile(model, fullgraph=True, dynamic=True, backend=backend)
    with tempfile.TemporaryDirectory() as scratch:
        start = time.perf_counter()
        onnx_file = export_onnx(model_dir, Path(scratch) / "model.onnx", token_types=False).path
        export_seconds = time.perf_counter() - start
        session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    counters.clear()  # the export traced a graph of its own
    rows, first_compile = [], None
    with torch.inference_mode():
        for batch in batches:
            for mixed in (False, True):
                ids, mask = _batch(batch, seqlen, mixed, seed=batch)
                if first_compile is None:
                    start = time.perf_counter()
                    compiled(ids, mask)
                    first_compile = time.perf_counter() - start
                reference = model(ids, mask)[0]
                difference = (compiled(ids, mask)[0] - reference).abs().max().item()
                feeds = {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}
                onnx_difference = float(np.abs(session.run(["last_hidden_state"], feeds)[0]
                                               - reference.numpy()).max())
                times = {name: time_call(call, device, min_samples=min_samples).median_s
                         for name, call in (("eager", lambda: model(ids, mask)),
                                            ("compiled", lambda: compiled(ids, mask)),
                                            ("onnxruntime",
                                             lambda: session.run(["last_hidden_state"], feeds)))}
                rows.append({"batch": batch, "seqlen": seqlen, "padding": "mixed" if mixed else
                             "none", "real_tokens": int(mask.sum()),
                             **{f"{name}_s": seconds for name, seconds in times.items()},
                             "compiled_speedup": times["eager"] / times["compiled"],
                             "onnxruntime_speedup": times["eager"] / times["onnxruntime"],
                             "compiled_max_abs_diff": difference,
                             "onnxruntime_max_abs_diff": onnx_difference})
    return {"model": str(model_dir), "backend": backend, "environment": environment(device),
            "first_compile_s": first_compile, "onnx_export_s": export_seconds,
            "graphs": counters["stats"]["unique_graphs"],
            "recompiles": sum(counters["recompiles"].values()), "rows": rows}


def run(args: argparse.Namespace) -> int:
    """The ``compiled`` subcommand (options: :mod:`.cli`): returns the exit status."""
    result = measure(args.model, args.batches, args.seqlen, args.min_samples, args.backend)
    text = json.dumps(result, indent=1) + "\n"
    atomic_write(args.out, lambda stream: stream.write(text.encode()))
    for row in result["rows"]:
        print(f"batch {row['batch']:>3} x {row['seqlen']} padding {row['padding']:<5}  eager "
              f"{row['eager_s']:.3f} s  compiled {row['compiled_s']:.3f} s "
              f"({row['compiled_speedup']:.2f}x)  onnxruntime {row['onnxruntime_s']:.3f} s "
              f"({row['onnxruntime_speedup']:.2f}x)")
    print(f"first compile {result['first_compile_s']:.1f} s, ONNX export "
          f"{result['onnx_export_s']:.1f} s, {result['graphs']} graph(s), "
          f"{result['recompiles']} recompilation(s)")
    return 0
