"""Compile every attention kernel for NVIDIA targets without a GPU, and report shared memory.

    python benchmarks/gpu/compile_check.py [--arch 90 80] [--quick] [--first-config]

Builds each kernel (forward, dK/dV, dQ, backward preprocessing) for every dtype (fp16, bf16,
fp32), head dim 64 and 128 (and 40, padded), windowing on and off, and every config of its
per-dtype autotuning list, with ``triton.compile`` on a ``GPUTarget``: Triton's front end,
its GPU passes and ``ptxas`` run, no driver is needed. Prints one line per compile with the
shared memory the compiled kernel uses next to ``tuning.shared_memory_bytes``'s estimate, and
exits 1 if a compile fails or a config the pruner keeps for a device would not fit it.
Needs ``TRITON_INTERPRET`` unset (compiled kernels).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.pop("TRITON_INTERPRET", None)

import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from mosaic_kernels import flash_attn as fa  # noqa: E402
from mosaic_kernels import tuning  # noqa: E402

# Shared memory per block of the targets (bytes), as the CUDA driver reports it.
SHARED_MEMORY = {80: 163 * 1024, 86: 99 * 1024, 89: 99 * 1024, 90: 227 * 1024}
TYPES = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}
KERNELS = {"fwd": fa._fwd_kernel, "dkdv": fa._bwd_dkdv_kernel, "dq": fa._bwd_dq_kernel}
POINTERS = {"CU_SEQLENS": "*i32", "SLOPES": "*fp32", "REACH": "*i32", "COUNTS": "*i32", "DO_NONFINITE": "*i32",
            "LSE": "*fp32", "DELTA": "*fp32"}
FLOATS = {"qk_scale", "sm_scale"}


def signature(kernel, element: str) -> dict[str, str]:
    sig = {}
    for name, param in zip(kernel.arg_names, kernel.params):
        if param.is_constexpr:
            sig[name] = "constexpr"
        elif name in POINTERS:
            sig[name] = POINTERS[name]
        elif name.isupper():
            sig[name] = f"*{element}"
        elif name in FLOATS:
            sig[name] = "fp32"
        else:
            sig[name] = "i32"
    return sig


def compile_one(kernel, element, constexprs, arch, num_warps, num_stages):
    source = ASTSource(kernel, signature(kernel, element), constexprs=constexprs)
    target = GPUTarget("cuda", arch, 32)
    return triton.compile(source, target=target,
                          options={"num_warps": num_warps, "num_stages": num_stages})


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, nargs="+", default=[90, 80])
    parser.add_argument("--quick", action="store_true",
                        help="head dim 64 only, windowing on only")
    parser.add_argument("--head-dims", type=int, nargs="+", default=None,
                        help="head dims to build (default 40 64 128; --quick: 64)")
    parser.add_argument("--first-config", action="store_true",
                        help="only the first config each kernel keeps after pruning")
    args = parser.parse_args(argv)
    print(f"triton {triton.__version__}, torch {torch.__version__}")
    failures = 0
    head_dims = args.head_dims or ((64,) if args.quick else (40, 64, 128))
    windows = (True,) if args.quick else (True, False)
    for arch in args.arch:
        limit = SHARED_MEMORY[arch]
        for dtype, element in TYPES.items():
            for kind, kernel in KERNELS.items():
                for head_dim in head_dims:
                    block_d = fa._block_d(head_dim)
                    kept = tuning.fitting(kind, tuning.configs(kind, dtype), block_d,
                                          dtype.itemsize, limit)
                    for config in kept[:1] if args.first_config else kept:
                        for window in windows:
                            constexprs = dict(config.kwargs, BLOCK_D=block_d, UPCAST=False,
                                              ROUND_BF16=False, IEEE=dtype == torch.float32,
                                              EVEN_D=head_dim == block_d, WINDOW=window,
                                              COUNT=False)
                            start = time.perf_counter()
                            label = (f"sm_{arch} {kind:4s} {element} d{head_dim:<3d} "
                                     f"{config.kwargs['BLOCK_M']}x{config.kwargs['BLOCK_N']} "
                                     f"w{config.num_warps} s{config.num_stages} window={window}")
                            try:
                                compiled = compile_one(kernel, element, constexprs, arch,
                                                       config.num_warps, config.num_stages)
                            except Exception as err:  # report every failure, then exit 1
                                failures += 1
                                print(f"FAIL {label}: {type(err).__name__}: {str(err)[:300]}")
                                continue
                            shared = compiled.metadata.shared
                            estimate = tuning.shared_memory_bytes(
                                kind, config.kwargs["BLOCK_M"], config.kwargs["BLOCK_N"],
                                block_d, dtype.itemsize, config.num_stages)
                            status = "ok" if shared <= limit else "OVER"
                            failures += status != "ok"
                            print(f"{status:4s} {label}: {time.perf_counter() - start:5.1f} s, "
                                  f"shared {shared} B (estimate {estimate}, limit {limit})",
                                  flush=True)
        pre = compile_one(fa._bwd_preprocess_kernel, "fp16",
                          dict(BLOCK_T=64, BLOCK_D=128), arch, 4, 1)
        print(f"ok   sm_{arch} preprocess: shared {pre.metadata.shared} B")
    print(f"{failures} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
