"""The floating-point dtypes the model computes in, by the names the command line and configs use
(:mod:`.dtype_names`: ``float32``, ``bfloat16``, ``float16``, or ``fp32``, ``bf16``, ``fp16``)."""

from __future__ import annotations

import functools
import time
import warnings

import torch

from .dtype_names import DTYPE_NAMES, canonical_dtype, spellings
from .errors import ConfigError

DTYPES: dict[str, torch.dtype] = {name: getattr(torch, name) for name in DTYPE_NAMES}


class SlowDtypeWarning(UserWarning):
    """The chosen dtype runs far slower than float32 on this machine."""


def resolve_dtype(value: str | torch.dtype, what: str = "dtype") -> torch.dtype:
    """The compute dtype named by ``value`` (a ``torch.dtype``, one of :data:`DTYPES`' keys or
    its short form such as ``"bf16"``).

    Raises :class:`ConfigError` naming ``what`` for anything else (float64, float8, integers, ...).
    """
    name = canonical_dtype(value)
    if name is not None:
        return DTYPES[name]
    if isinstance(value, torch.dtype) and value in DTYPES.values():
        return value
    raise ConfigError(f"{what} {value!r} is not supported; use one of {spellings()}.")


def native_cpu_bfloat16() -> bool:
    """Whether this CPU has bfloat16 arithmetic instructions (x86 AVX-512 BF16 or AMX).

    Without them, PyTorch emulates bfloat16 matrix products: one machine measured 1.2 GFLOP/s
    against 84 GFLOP/s in float32.
    """
    return any(getattr(torch.cpu, probe, lambda: False)()
               for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))


@functools.cache
def cpu_matmul_gflops(dtype: torch.dtype, size: int = 256) -> float:
    """GFLOP/s of one (size x size) @ (size x size) product in ``dtype`` here, best of three
    (about 30 ms where bfloat16 is emulated, a millisecond otherwise)."""
    a, b = torch.ones(size, size, dtype=dtype), torch.ones(size, size, dtype=dtype)
    seconds = []
    for _ in range(3):
        start = time.perf_counter()
        torch.matmul(a, b)
        seconds.append(time.perf_counter() - start)
    return 2 * size ** 3 / max(min(seconds), 1e-9) / 1e9


def warn_if_slow(dtype: torch.dtype, device: torch.device, native: bool | None = None) -> None:
    """Warn once per process when bfloat16 is chosen on a CPU that emulates it.

    The message names the speed of both dtypes, measured here, and float32 as the alternative.
    ``native`` overrides the detection (:func:`native_cpu_bfloat16`).
    """
    if dtype != torch.bfloat16 or device.type != "cpu":
        return
    if native if native is not None else native_cpu_bfloat16():
        return
    slow, fast = cpu_matmul_gflops(torch.bfloat16), cpu_matmul_gflops(torch.float32)
    capability = torch.backends.cpu.get_cpu_capability()
    warnings.warn(f"this CPU ({capability}) has no native bfloat16: a bfloat16 matrix product "
                  f"measured {slow:.1f} GFLOP/s here against {fast:.1f} in float32 "
                  f"({fast / max(slow, 1e-9):.0f}x slower); use dtype float32 for speed.",
                  SlowDtypeWarning)  # one message, one place: Python shows it once
