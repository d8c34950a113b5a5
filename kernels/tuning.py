"""Block-size policy of the attention kernels: per-dtype config lists, pruning, autotuning.

On a GPU each kernel is autotuned over a short list of :class:`triton.Config` chosen for its
operand dtype: 16-bit operands use tensor cores and large tiles (up to 128 x 128 in the
forward); float32 operands use exact (``"ieee"``) dot products, which Triton lowers to FMA loops
whose compile time grows with the tile, so their list is short and small (a head_dim 128 fp32
first call did not return in 150 s with eight 16-bit-sized configs). Configs whose tiles cannot
fit the device's shared memory are pruned before anything is compiled.

The autotune key is the padded head dim, a power-of-two bucket of the longest sequence, and
whether windowing is on (the autotuner adds the tensors' dtypes); the best configs are cached on
disk (``cache_results``, Triton >= 3.2) so a new process does not benchmark again.

Under the Triton interpreter a single fixed small config is used: interpreted
``@triton.autotune`` with several configs does not work, and small blocks keep CPU time low.
"""

from __future__ import annotations

import torch
import triton

# (BLOCK_M, BLOCK_N, num_warps, num_stages, BLOCK_Ds). dK/dV programs own BLOCK_N keys and
# stream BLOCK_M queries; forward and dQ programs own BLOCK_M queries and stream BLOCK_N keys.
# The last field names the padded head dims a config ships for: not those where it spills
# inside its main loop (`python -m mosaic_encoder.bench compile --target sm_90` shows
# registers and spills per config; benchmarks/gpu/compile-sm_90-*.json record them). Forward
# 64 x 128 with 4 warps and 3 stages fits two blocks per SM at head dim 64 (104 KiB of shared
# memory, at most 255 registers a thread), so one block's softmax overlaps the other's products.
_ALL = (16, 32, 64, 128)
_UP_TO_64 = (16, 32, 64)
_HALF = {
    "fwd": [(128, 128, 8, 2, _ALL), (128, 128, 8, 3, _ALL), (64, 128, 4, 3, _UP_TO_64),
            (128, 64, 8, 3, _ALL)],
    "dkdv": [(32, 128, 8, 3, _ALL), (64, 128, 8, 2, _UP_TO_64), (32, 64, 4, 3, _ALL),
             (64, 64, 4, 2, _UP_TO_64)],
    "dq": [(128, 64, 8, 3, _ALL), (128, 32, 4, 3, _UP_TO_64), (64, 64, 4, 2, _ALL),
           (64, 32, 4, 3, _ALL)],
}
# float32 operands: at most two configs per kernel and head dim, small tiles, 8 warps. Exact
# FMA products compile slowly (a first call compiles every config the pruner keeps) and their
# layouts replicate operands across threads: at head dim 128 only 16-row tiles stay out of
# local memory.
_FP32 = {
    "fwd": [(64, 32, 8, 2, _UP_TO_64), (32, 32, 8, 2, _UP_TO_64), (16, 32, 8, 2, (128,))],
    "dkdv": [(16, 64, 8, 2, _UP_TO_64), (32, 32, 8, 2, _UP_TO_64), (16, 32, 8, 2, (128,))],
    "dq": [(64, 32, 8, 2, _UP_TO_64), (32, 32, 8, 2, _UP_TO_64), (16, 32, 8, 2, (128,))],
}
# Fixed configs under the interpreter; BLOCK_M != BLOCK_N on purpose so the two tilings differ.
INTERPRETED = {
    "fwd": {"BLOCK_M": 32, "BLOCK_N": 16},
    "dkdv": {"BLOCK_M": 16, "BLOCK_N": 32},
    "dq": {"BLOCK_M": 32, "BLOCK_N": 16},
}
AUTOTUNE_KEY = ["BLOCK_D", "seq_bucket", "WINDOW"]
# Backend options of every compiled launch. Multiply-add fusion on: the online softmax and the
# bias are written as multiply-adds (s * scale + bias), and the windowing bound's error terms
# assume one rounding each. Triton 3.9 fuses by default but warns that 3.10 will not, so it is
# set here rather than left to the version's default.
COMPILE_OPTIONS = {"enable_fp_fusion": True}


def configs(kind: str, dtype: torch.dtype) -> list[triton.Config]:
    """The autotuning candidates of kernel ``kind`` ("fwd", "dkdv", "dq") for an operand dtype."""
    table = _FP32 if dtype == torch.float32 else _HALF
    return [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s)
            for bm, bn, w, s, _ in table[kind]]


def shipped_for(kind: str, config: triton.Config, block_d: int) -> bool:
    """Whether ``config`` of kernel ``kind`` ships for padded head dim ``block_d``."""
    key = (config.kwargs["BLOCK_M"], config.kwargs["BLOCK_N"], config.num_warps,
           config.num_stages)
    return any(entry[:4] == key and block_d in entry[4] for table in (_HALF, _FP32)
               for entry in table[kind])


def seq_bucket(max_seqlen: int) -> int:
    """The autotune bucket of a longest sequence: the next power of two in [128, 16384]."""
    return min(16384, max(128, triton.next_power_of_2(max(1, max_seqlen))))


def shared_memory_bytes(kind: str, block_m: int, block_n: int, block_d: int, element_size: int,
                        num_stages: int) -> int:
    """An estimate of the shared memory one program of kernel ``kind`` needs.

    16-bit operands: the resident operand tiles plus ``num_stages`` copies of the two streamed
    ones (software pipelining); the (BLOCK_M, BLOCK_N) probability and dS tiles stay in
    registers, since Hopper's wgmma reads its first operand from them. float32 operands (exact
    FMA products): Triton does not pipeline those loads, so one copy of the streamed tiles, plus
    the float32 score tile staged between the two products of a pair. Within 10 % of ptxas for
    every shipped config (the compile report's ``smem`` against ``est``).
    """
    if kind == "dkdv":
        resident, streamed = 2 * block_n, 2 * block_m  # K, V held; Q, dO streamed
    else:
        resident, streamed = (1 if kind == "fwd" else 2) * block_m, 2 * block_n
    if element_size == 4:
        return ((resident + streamed) * block_d + block_m * block_n) * element_size
    return (resident + num_stages * streamed) * block_d * element_size


def _device_shared_memory(device: torch.device) -> int:
    properties = triton.runtime.driver.active.utils.get_device_properties(device.index or 0)
    return properties["max_shared_mem"]


def fitting(kind: str, candidates: list[triton.Config], block_d: int, element_size: int,
            limit: int) -> list[triton.Config]:
    """The candidates shipped for ``block_d`` whose :func:`shared_memory_bytes` fit ``limit``;
    the smallest of those shipped if none fits."""
    shipped = [config for config in candidates if shipped_for(kind, config, block_d)]

    def need(config):
        return shared_memory_bytes(kind, config.kwargs["BLOCK_M"], config.kwargs["BLOCK_N"],
                                   block_d, element_size, config.num_stages)
    kept = [config for config in shipped if need(config) <= limit]
    return kept or [min(shipped, key=need)]


def _pruner(kind: str):
    def prune(candidates, named_args, **kwargs):
        q = named_args["Q"]
        return fitting(kind, candidates, kwargs["BLOCK_D"], q.element_size(),
                       _device_shared_memory(q.device))
    return prune


class Launcher:
    """A kernel plus its block-size policy: autotuned per dtype family on a GPU, fixed when
    interpreted.

    The tuned kernels overwrite every element of their outputs, so the autotuner's repeated
    benchmark launches need no reset hook.
    """

    def __init__(self, kernel, kind: str, interpreted: bool):
        self.kind = kind
        self._interpreted = interpreted
        if interpreted:
            self._tuned = {}
            self._kernel = kernel
        else:
            self._tuned = {
                family: triton.autotune(configs=configs(kind, dtype), key=AUTOTUNE_KEY,
                                        prune_configs_by={"early_config_prune": _pruner(kind)},
                                        cache_results=True)(kernel)
                for family, dtype in (("half", torch.float16), ("fp32", torch.float32))
            }

    def __call__(self, grid, dtype: torch.dtype, *args, **kwargs):
        if self._interpreted:
            self._kernel[grid](*args, **kwargs, **INTERPRETED[self.kind], **COMPILE_OPTIONS)
        else:
            self._tuned["fp32" if dtype == torch.float32 else "half"][grid](
                *args, **kwargs, **COMPILE_OPTIONS)

    def block_sizes(self, dtype: torch.dtype) -> dict[str, int] | None:
        """BLOCK_M/BLOCK_N of the last launch for ``dtype``'s family (None before one on GPU)."""
        if self._interpreted:
            return dict(INTERPRETED[self.kind])
        best = getattr(self._tuned["fp32" if dtype == torch.float32 else "half"], "best_config",
                       None)
        return None if best is None else {name: best.kwargs[name] for name in ("BLOCK_M", "BLOCK_N")}
