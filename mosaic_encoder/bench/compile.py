"""Offline compile report of the attention kernels: every config, compiled for a GPU target
without a GPU.

    python -m mosaic_encoder.bench compile --target sm_90 [--json] [--dtypes bf16]
        [--head-dims 64] [--kinds fwd,dkdv,dq,...] [--first-config] [--out FILE]

Triton compiles for a target without a driver: its front end, GPU passes and bundled ``ptxas``
run, and its bundled ``cuobjdump``/``nvdisasm`` read the cubin back. Each build is a kernel
(``fwd``, ``dkdv``, ``dq``, and ``dq_slopes``: the dQ kernel as learned ALiBi slopes launch it,
also summing the slopes' gradient) for an operand dtype, a head dim and one config of its autotuning
list (``mosaic_kernels.tuning``) that the shared-memory pruner keeps for the target, windowing
on, with the launch-time specialisations of contiguous (tokens, heads, head_dim) tensors:
pointers 16-byte aligned, token and head strides and head_dim divisible by 16. The small
kernels around them have one launch configuration each (4 warps, 3 stages) and are built too:
the windowing pre-pass (``key_bound``, ``reach``: ``BLOCK_T`` tokens a program, shown as
``BLOCK_Tx0``), the dK/dV query spans (``span``: ``BLOCK_G`` key granules a program times
``CHUNK_Q`` query granules a step; no operand dtype or head dim, shown as ``i32 d0``) and the
backward's preprocessing (``delta``). One line each:

- ``regs``: registers per thread (``cuobjdump -res-usage``);
- ``spill in/out``: local-memory instructions (``LDL``/``STL``) inside the main loops, and
  elsewhere; a spill inside a loop costs every iteration;
- ``smem``: shared memory of the compiled kernel, and ``tuning.shared_memory_bytes``'s
  estimate beside it (0 for the small kernels, which have none);
- ``wgmma``: whether the products are Hopper warpgroup MMAs (``HGMMA``);
- ``loop``: SASS instructions per iteration of the main loop: the smallest loop holding the
  kernel's products (the full-block, linear-bias loop that most iterations run); in a kernel
  without products, the smallest loop (0 when it has none);
- ``s``: compile seconds of a cold compile (Triton's cache bypassed), as CPU time of the process
  and its children (``ptxas``): wall time on a shared machine measures the neighbours.

``--json`` prints the rows as JSON (``benchmarks/gpu/compile-*.json`` are such reports); the
exit status is 1 when a build fails or a kept config exceeds the target's shared memory.

``--estimate REPORT --steps FILE`` compiles nothing: it prices the first-call compiles of a list
of time-boxed steps with a recorded report. Each line of FILE reads ``NAME LIMIT
KINDS:DTYPES:HEAD_DIMS:WINDOWS``: a step of ``LIMIT`` seconds whose first calls autotune those
kernels (windowing ``on``, ``off`` or ``both``, each compiled apart; a head dim is priced at the
smallest reported one at least as large, fp16 at bf16's seconds when the report has no fp16;
what an earlier step compiled is cached; builds the report lacks are listed as unpriced). A step is too short when its limit is below its compile
seconds plus ``--measure-min``; the exit status is then 1. The GPU script's ``DRY_RUN=1`` checks its time limits with it.
Needs ``TRITON_INTERPRET`` unset: the command removes it when Triton is not yet imported.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from ..atomic import atomic_path
from ..errors import MosaicError

# Shared memory per block the CUDA driver reports for a target (bytes).
SHARED_MEMORY = {80: 163 * 1024, 86: 99 * 1024, 89: 99 * 1024, 90: 227 * 1024}
DTYPES = ("fp16", "bf16", "fp32")
# The autotuned kernels; dq_slopes is the dQ kernel as learned ALiBi slopes launch it
# (SLOPE_GRAD), with dq's configs.
KINDS = ("fwd", "dkdv", "dq", "dq_slopes")
SMALL_KINDS = ("key_bound", "reach", "span", "delta")  # one launch configuration each
ALL_KINDS = KINDS + SMALL_KINDS
_KERNELS = {"fwd": "_fwd_kernel", "dkdv": "_bwd_dkdv_kernel", "dq": "_bwd_dq_kernel",
            "dq_slopes": "_bwd_dq_kernel", "key_bound": "_key_bound_kernel",
            "reach": "_reach_kernel", "span": "_span_kernel", "delta": "_bwd_preprocess_kernel"}
_TUNED_AS = {"dq_slopes": "dq"}  # kinds that take another kind's autotuning configs
_POINTERS = {"CU_SEQLENS": "*i32", "SLOPES": "*fp32", "REACH": "*i32", "SPAN": "*i32", "KMAX": "*i32",
             "COUNTS": "*i32", "DO_NONFINITE": "*i32", "LSE": "*fp32", "DELTA": "*fp32",
             "DSLOPE_ROWS": "*fp32"}
_FLOATS = {"qk_scale", "abs_qk_scale", "sm_scale"}
# Strides of per-token rows (lse, delta, reach, span) are multiples of the token count: not
# specialised.
_ROW_STRIDES = {"stride_lse_h", "stride_reach_h", "stride_span_s", "stride_span_h",
                "stride_delta_h"}
_PRODUCTS = re.compile(r"\b(HGMMA|HMMA|FFMA)\b")
_LOCAL = re.compile(r"\b(LDL|STL)\b")


class CompileError(MosaicError):
    """The compile report cannot run (interpreted Triton, an unknown target)."""


@dataclass(frozen=True)
class Build:
    """One kernel config to compile."""
    kind: str
    dtype: str
    head_dim: int
    block_m: int
    block_n: int
    warps: int
    stages: int


@dataclass(frozen=True)
class Row(Build):
    """What the compiled build shows; ``error`` set (and the rest zero) when it failed."""
    registers: int
    spills_in_loop: int
    spills_outside: int
    shared: int
    shared_estimate: int
    wgmma: bool
    loop_instructions: int
    seconds: float
    error: str = ""


def parse_target(text: str) -> int:
    """``"sm_90"`` -> 90."""
    match = re.fullmatch(r"sm_(\d+)a?", text)
    if not match or int(match.group(1)) not in SHARED_MEMORY:
        raise CompileError(f"--target must be one of {', '.join(f'sm_{a}' for a in SHARED_MEMORY)}"
                           f", got {text!r}.")
    return int(match.group(1))


def _compiled_triton():
    """Import triton for compiling (not interpreting) and the kernel modules."""
    if "triton" not in sys.modules:
        os.environ.pop("TRITON_INTERPRET", None)
    from mosaic_kernels import flash_attn, tuning

    if flash_attn._INTERPRET:
        raise CompileError("the compile report needs compiled Triton: unset TRITON_INTERPRET "
                           "before Triton is imported.")
    return flash_attn, tuning


def builds(kinds, dtypes, head_dims, arch: int, first_only: bool) -> list[Build]:
    """The configs each kernel keeps after pruning for ``arch``, per dtype and head dim."""
    import torch

    flash_attn, tuning = _compiled_triton()
    torch_dtypes = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
    result = []
    if "span" in kinds:  # reads and writes int32 only
        result.append(Build("span", "i32", 0, *flash_attn._SPAN_TILE, 4, 3))
    for dtype in dtypes:
        for kind in kinds:
            for head_dim in head_dims:
                if kind in SMALL_KINDS:
                    if kind != "span":
                        result.append(Build(kind, dtype, head_dim,
                                            flash_attn._PREPROCESS_BLOCK_T, 0, 4, 3))
                    continue
                block_d = max(16, 1 << (head_dim - 1).bit_length())
                tuned = _TUNED_AS.get(kind, kind)
                kept = tuning.fitting(tuned, tuning.configs(tuned, torch_dtypes[dtype]), block_d,
                                      torch_dtypes[dtype].itemsize, SHARED_MEMORY[arch])
                for config in kept[:1] if first_only else kept:
                    result.append(Build(kind, dtype, head_dim, config.kwargs["BLOCK_M"],
                                        config.kwargs["BLOCK_N"], config.num_warps,
                                        config.num_stages))
    return result


def _source(kernel, build: Build):
    """An ``ASTSource`` with the signature, constexprs and divisibility of a real launch."""
    from triton.compiler import ASTSource

    signature, attrs = {}, {}
    for index, (name, param) in enumerate(zip(kernel.arg_names, kernel.params)):
        if param.is_constexpr:
            signature[name] = "constexpr"
            continue
        if name in _POINTERS or name.isupper():
            signature[name] = _POINTERS.get(name, f"*{build.dtype}")
            attrs[(index,)] = [["tt.divisibility", 16]]
        elif name in _FLOATS:
            signature[name] = "fp32"
        else:
            signature[name] = "i32"
            if (name.startswith("stride_") and name not in _ROW_STRIDES) or name == "head_dim":
                attrs[(index,)] = [["tt.divisibility", 16]]
    block_d = max(16, 1 << (build.head_dim - 1).bit_length())
    values = dict(BLOCK_M=build.block_m, BLOCK_N=build.block_n, BLOCK_D=block_d,
                  UPCAST=False, ROUND_BF16=False, IEEE=build.dtype == "fp32",
                  EVEN_D=build.head_dim == block_d, WINDOW=True, COUNT=False,
                  LINEAR_BIAS=True, SLOPE_GRAD=build.kind == "dq_slopes", BLOCK_T=build.block_m,
                  BLOCK_G=build.block_m,
                  CHUNK_Q=build.block_n)
    constexprs = {name: values[name] for name in signature if signature[name] == "constexpr"}
    return ASTSource(kernel, signature, constexprs=constexprs, attrs=attrs)


def _tool(name: str) -> str:
    import triton

    return str(Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name)


def _cubin_facts(cubin: bytes) -> tuple[int, str]:
    """(registers per thread, SASS text) of a cubin, read with Triton's bundled tools."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "kernel.cubin"
        path.write_bytes(cubin)
        usage = subprocess.run([_tool("cuobjdump"), "-res-usage", str(path)], check=True,
                               capture_output=True, text=True).stdout
        sass = subprocess.run([_tool("nvdisasm"), "-c", str(path)], check=True,
                              capture_output=True, text=True).stdout
    registers = re.search(r"REG:(\d+)", usage)
    return int(registers.group(1)) if registers else 0, sass


def analyse_sass(sass: str) -> dict:
    """Loops, products and local memory of a kernel's SASS (``nvdisasm -c`` output).

    A loop is a backward branch to an earlier label (a branch to itself is the padding after
    the exit): its body the instructions from the label to the branch. The main loops are those
    holding a product instruction (``HGMMA``, ``HMMA``, or ``FFMA`` for the fp32 kernels' exact
    products), or every loop of a kernel without products; the reported size is the smallest.
    """
    instructions, labels = [], {}
    for line in sass.splitlines():
        label = re.match(r"^(\.L_x_\d+):", line)
        if label:
            labels[label.group(1)] = len(instructions)
        elif re.match(r"^\s*/\*[0-9a-f]+\*/", line):
            instructions.append(line)
    loops, product_loops = [], []
    for index, text in enumerate(instructions):
        target = re.search(r"\bBRA\b.*`\((\.L_x_\d+)\)", text)
        # a branch to itself is the padding after the kernel's exit, not a loop
        if target and labels.get(target.group(1), index) < index:
            body = instructions[labels[target.group(1)]:index + 1]
            loops.append((labels[target.group(1)], index + 1))
            if any(_PRODUCTS.search(line) for line in body):
                product_loops.append(loops[-1])
    loops = product_loops or loops
    in_loop = set()
    for start, end in loops:
        in_loop.update(range(start, end))
    local = [i for i, text in enumerate(instructions) if _LOCAL.search(text)]
    return dict(
        wgmma=any("HGMMA" in text for text in instructions),
        loop_instructions=min((end - start for start, end in loops), default=0),
        spills_in_loop=sum(i in in_loop for i in local),
        spills_outside=sum(i not in in_loop for i in local),
    )


def _cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def compile_build(build: Build, arch: int) -> Row:
    """Compile one build for ``sm_{arch}`` and read its facts back."""
    import triton
    from triton.backends.compiler import GPUTarget

    flash_attn, tuning = _compiled_triton()
    kernel = getattr(flash_attn, _KERNELS[build.kind])
    block_d = max(16, 1 << (build.head_dim - 1).bit_length())
    element = {"fp16": 2, "bf16": 2, "fp32": 4}.get(build.dtype, 4)
    estimate = 0 if build.kind in SMALL_KINDS else tuning.shared_memory_bytes(
        _TUNED_AS.get(build.kind, build.kind), build.block_m, build.block_n, block_d, element, build.stages)
    start = _cpu_seconds()
    try:
        compiled = triton.compile(_source(kernel, build), target=GPUTarget("cuda", arch, 32),
                                  options={"num_warps": build.warps, "num_stages": build.stages,
                                           **tuning.COMPILE_OPTIONS})
        registers, sass = _cubin_facts(compiled.asm["cubin"])
    except Exception as err:  # every failure is a row of the report, then exit status 1
        return Row(**asdict(build), registers=0, spills_in_loop=0, spills_outside=0, shared=0,
                   shared_estimate=estimate, wgmma=False, loop_instructions=0,
                   seconds=round(_cpu_seconds() - start, 1),
                   error=f"{type(err).__name__}: {str(err).strip()[:300]}")
    return Row(**asdict(build), registers=registers, shared=compiled.metadata.shared,
               shared_estimate=estimate, seconds=round(_cpu_seconds() - start, 1),
               **analyse_sass(sass))


def format_row(row: Row, arch: int) -> str:
    label = (f"sm_{arch} {row.kind:9s} {row.dtype:4s} d{row.head_dim:<3d} "
             f"{row.block_m}x{row.block_n} w{row.warps} s{row.stages}")
    if row.error:
        return f"FAIL {label}: {row.error}"
    status = "ok" if row.shared <= SHARED_MEMORY[arch] else "OVER"
    return (f"{status:4s} {label}: regs {row.registers:3d}, spill in/out "
            f"{row.spills_in_loop}/{row.spills_outside}, smem {row.shared} (est "
            f"{row.shared_estimate}), wgmma {'yes' if row.wgmma else 'no'}, loop "
            f"{row.loop_instructions}, {row.seconds:.1f} s")


def failed(row: Row, arch: int) -> bool:
    return bool(row.error) or row.shared > SHARED_MEMORY[arch]


def parse_compiles(spec: str) -> set[tuple[str, str, int, bool]]:
    """``"fwd,dq:bf16:64,128:both"`` -> {(kind, dtype, head_dim, window), ...}."""
    try:
        kinds, dtypes, head_dims, windows = spec.split(":")
        windowing = {"on": (True,), "off": (False,), "both": (True, False)}[windows]
        result = {(kind, dtype, int(head_dim), window) for kind in kinds.split(",")
                  for dtype in dtypes.split(",") for head_dim in head_dims.split(",")
                  for window in windowing}
    except (ValueError, KeyError):
        raise CompileError(f"--compiles must read KINDS:DTYPES:HEAD_DIMS:on|off|both, got "
                           f"{spec!r}.") from None
    unknown = {kind for kind, *_ in result} - set(KINDS) | {d for _, d, *_ in result} - set(DTYPES)
    if unknown:
        raise CompileError(f"--compiles names unknown kernels or dtypes: {sorted(unknown)}.")
    return result


def estimate_seconds(report: dict, compiles: set, already: set) -> tuple[float, set]:
    """Compile seconds of ``report`` for the builds of ``compiles`` not in ``already``, and the
    (kind, dtype, head dim) the report has no build for (unpriced)."""
    seconds, unpriced = 0.0, set()
    dtypes = {row["dtype"] for row in report["rows"]}
    for kind, dtype, head_dim, _ in compiles - already:
        if dtype == "fp16" and dtype not in dtypes:
            dtype = "bf16"  # the same kernels and configs, another element type
        reported = sorted({row["head_dim"] for row in report["rows"]
                           if row["kind"] == kind and row["dtype"] == dtype
                           and row["head_dim"] >= head_dim})
        if not reported:
            unpriced.add((kind, dtype, head_dim))
            continue
        seconds += sum(row["seconds"] for row in report["rows"] if row["kind"] == kind
                       and row["dtype"] == dtype and row["head_dim"] == reported[0])
    return seconds, unpriced


def check_steps(report: dict, lines: list[str], measure_min: float) -> list[tuple]:
    """``(name, limit, compile seconds, unpriced, fits)`` per step line (see the module
    docstring); a step fits when its limit covers the seconds priced."""
    compiled, result = set(), []
    for line in lines:
        try:
            name, limit, spec = line.split()
            limit = float(limit)
        except ValueError:
            raise CompileError(f"a step line must read NAME LIMIT SPEC, got {line!r}.") \
                from None
        compiles = parse_compiles(spec)
        need, unpriced = estimate_seconds(report, compiles, compiled)
        compiled |= compiles
        result.append((name, limit, need, unpriced, need + measure_min <= limit))
    return result


def run_estimate(args) -> int:
    try:
        report = json.loads(Path(args.estimate).read_text())
        lines = [line for line in Path(args.steps).read_text().splitlines() if line.strip()]
    except (OSError, ValueError, TypeError) as err:
        raise CompileError(f"cannot read the compile report {args.estimate} or the steps "
                           f"{args.steps}: {err}") from None
    checked = check_steps(report, lines, args.measure_min)
    print(f"first-call compiles priced with {args.estimate} (Triton {report.get('triton')}, "
          f"CPU seconds), plus {args.measure_min:g} s of measuring:")
    for name, limit, need, unpriced, fits in checked:
        missing = ", ".join(f"{k} {d} d{h}" for k, d, h in sorted(unpriced))
        print(f"{'ok' if fits else 'TOO SHORT':9s} {name}: limit {limit:g} s, compiles "
              f"{math.ceil(need)} s" + (f" (unpriced, not in the report: {missing})"
                                        if missing else ""))
    return 0 if all(fits for *_, fits in checked) else 1


def run_compile(args) -> int:
    """The ``compile`` subcommand: returns the exit status."""
    if args.estimate:
        return run_estimate(args)
    os.environ["TRITON_ALWAYS_COMPILE"] = "1"  # cold compiles: the seconds are the point
    import triton

    arch = parse_target(args.target)
    document = {"target": f"sm_{arch}", "triton": triton.__version__, "rows": []}
    rows = []
    for build in builds(args.kinds, args.dtypes, args.head_dims, arch, args.first_config):
        rows.append(compile_build(build, arch))
        document["rows"].append(asdict(rows[-1]))
        if not args.json:
            print(format_row(rows[-1], arch), flush=True)
        if args.out:  # after every build: a long report cut short keeps what it compiled
            with atomic_path(args.out) as path:
                path.write_text(json.dumps(document, indent=1) + "\n")
    if args.json:
        print(json.dumps(document, indent=1))
    return 1 if any(failed(row, arch) for row in rows) else 0
