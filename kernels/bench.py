"""Attention benchmarks: ALiBi attention over packed variable-length batches, five ways.

Run ``python -m kernels.bench --help`` (or ``mosaic-encoder bench``); ``python -m kernels.bench
model --help`` for the whole-model benchmark in :mod:`kernels.bench_model`. BENCHMARKS.md
explains every column.

Implementations (all get the same packed inputs q, k, v (T, heads, head_dim), ``cu_seqlens`` and
the ALiBi slopes):

``ours-triton``  the fused Triton kernel ``kernels.flash_attn.flash_attn_varlen_alibi``. On a CPU
                 it only runs in Triton's interpreter: reported as unsupported unless
                 ``--triton-interpret`` is given (with TRITON_INTERPRET=1 in the environment) and
                 the batch has at most ``--interpret-max-tokens`` tokens.
``ours-sdpa``    ``mosaic_encoder.attention.sdpa_varlen_alibi``, the plain-PyTorch chunked path
                 the model uses on CPU.
``sdpa-dense``   ``torch.nn.functional.scaled_dot_product_attention`` on the padded batch with a
                 dense (B, heads, S, S) float32 ALiBi + key-padding bias built in the call.
``flex``         FlexAttention on the packed tokens with an ALiBi ``score_mod`` and a document
                 ``block_mask``; ``torch.compile``d (``dynamic=True``, compiled once, in setup)
                 unless ``--flex-eager``.
``naive``        what upstream's PyTorch path does: a (heads, N, N) float32 ALiBi table built
                 ahead (N = max(S, ``--alibi-starting-size``), reported as ``state_bytes``); per
                 call the (B, heads, S, S) bias ``table + (-10000 * key padding)``, explicit
                 ``QK^T / sqrt(d) + bias``, float32 softmax, ``P V``.

Padded implementations get their padded (B, heads, S, d) inputs prepared outside the timed call
and are credited only the real query-key pairs (:mod:`kernels.flops`). Errors are measured
against a float64 oracle (forward and analytic backward, one sequence and head at a time), on
the real tokens only.
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import gc
import json
import math
import os
import random
import shlex
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from .flops import MODES, attention_flops, padded_pairs, real_pairs, tflops
from .measure import environment, gib, peak_memory, time_call, wall_time

SCHEMA = "mosaic-encoder.bench/1"
IMPLS = ("ours-triton", "ours-sdpa", "sdpa-dense", "flex", "naive")
COMPOSITIONS = ("single", "equal", "mixed")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Max |error| against the float64 oracle, for inputs drawn from N(0, 1): (output, gradients).
TOLERANCES = {"float32": (1e-4, 1e-3), "float16": (5e-3, 5e-2), "bfloat16": (4e-2, 4e-1)}
DEFAULT_LENGTHS = {"cpu": (128, 256, 512, 1024, 2048), "cuda": tuple(2 ** i for i in range(7, 15))}
QUICK_LENGTHS = {"cpu": (128, 512), "cuda": (128, 512, 2048)}

ATTENTION_FIELDS = (
    "kind", "impl", "composition", "seqlen", "num_seqs", "total_tokens", "padded_tokens",
    "heads", "head_dim", "dtype", "mode", "status", "reason", "notes",
    "time_ms", "time_ms_events", "timer", "samples", "real_pairs", "padded_pairs", "flops",
    "tflops", "peak_bytes", "memory_method", "state_bytes", "setup_s",
    "max_abs_err", "max_abs_err_grad", "tolerance", "tolerance_grad", "within_tolerance",
    "oracle", "device", "torch", "triton", "seqlens")


class Unsupported(Exception):
    """A combination this implementation, device or size cannot run; becomes a reasoned row."""


# --------------------------------------------------------------------------------------------
# Cases and inputs
# --------------------------------------------------------------------------------------------

def composition_seqlens(composition: str, seqlen: int, batch_tokens: int,
                        seed: int = 0) -> list[int]:
    """Sequence lengths of one packed batch whose longest sequence has ``seqlen`` tokens.

    * ``single``: one sequence of ``seqlen``;
    * ``equal``: ``max(2, batch_tokens // seqlen)`` sequences of ``seqlen``;
    * ``mixed``: one sequence of ``seqlen`` plus lengths drawn log-uniformly from
      [max(1, seqlen // 32), seqlen] until the batch holds ``max(batch_tokens, 2 * seqlen)``
      tokens (the last one shortened to fit), in a shuffled order; deterministic in ``seed``.
    """
    if seqlen < 1:
        raise ValueError(f"sequence length must be positive, got {seqlen}.")
    if composition == "single":
        return [seqlen]
    if composition == "equal":
        return [seqlen] * max(2, batch_tokens // seqlen)
    if composition != "mixed":
        raise ValueError(f"composition must be one of {COMPOSITIONS}, got {composition!r}.")
    rng = random.Random(seed * 1_000_003 + seqlen * 7919 + batch_tokens)
    target, low = max(batch_tokens, 2 * seqlen), max(1, seqlen // 32)
    lengths = [seqlen]
    while sum(lengths) < target:
        draw = round(math.exp(rng.uniform(math.log(low), math.log(seqlen))))
        lengths.append(min(draw, target - sum(lengths)))
    rng.shuffle(lengths)
    return lengths


@dataclass(frozen=True)
class Case:
    composition: str
    seqlen: int
    seqlens: tuple[int, ...]
    heads: int
    head_dim: int
    dtype: str

    @property
    def total_tokens(self) -> int:
        return sum(self.seqlens)


@dataclass
class Inputs:
    """Packed inputs of one case, shared by every implementation."""

    q: torch.Tensor          # (T, heads, d)
    k: torch.Tensor
    v: torch.Tensor
    dout: torch.Tensor       # (T, heads, d), the incoming gradient for fwd+bwd
    cu_seqlens: torch.Tensor  # (B + 1,) int32
    slopes: torch.Tensor     # (heads,) float32
    seqlens: list[int]
    scale: float
    _padding: dict = field(default_factory=dict)

    @property
    def max_seqlen(self) -> int:
        return max(self.seqlens)

    def padding(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(indices (T,) into the flattened (B * S) padded layout, key mask (B, S) of 0/1)."""
        if not self._padding:
            device, width = self.q.device, self.max_seqlen
            lengths = torch.tensor(self.seqlens, device=device)
            mask = (torch.arange(width, device=device)[None, :] < lengths[:, None])
            self._padding["indices"] = mask.flatten().nonzero().flatten()
            self._padding["mask"] = mask
        return self._padding["indices"], self._padding["mask"]

    def to_padded(self, packed: torch.Tensor) -> torch.Tensor:
        """(T, heads, d) -> contiguous (B, heads, S, d), zeros at padded positions."""
        indices, mask = self.padding()
        flat = packed.new_zeros((mask.numel(), *packed.shape[1:]))
        flat[indices] = packed
        batch, width = mask.shape
        return flat.view(batch, width, *packed.shape[1:]).transpose(1, 2).contiguous()

    def to_packed(self, padded: torch.Tensor) -> torch.Tensor:
        """(B, heads, S, d) -> (T, heads, d), real tokens only."""
        indices, _ = self.padding()
        return padded.transpose(1, 2).flatten(0, 1)[indices]


def make_inputs(case: Case, device: torch.device, seed: int = 0) -> Inputs:
    """Standard-normal q, k, v and output gradient, drawn in float32 then cast to the dtype."""
    from mosaic_encoder.alibi import alibi_slopes

    generator = torch.Generator().manual_seed(seed)
    shape = (case.total_tokens, case.heads, case.head_dim)
    q, k, v, dout = (torch.randn(shape, generator=generator).to(device=device,
                                                                 dtype=DTYPES[case.dtype])
                     for _ in range(4))
    cu = torch.zeros(len(case.seqlens) + 1, dtype=torch.int32)
    cu[1:] = torch.tensor(case.seqlens).cumsum(0)
    return Inputs(q, k, v, dout, cu.to(device), alibi_slopes(case.heads, device=device),
                  list(case.seqlens), 1.0 / math.sqrt(case.head_dim))


# --------------------------------------------------------------------------------------------
# Float64 oracle
# --------------------------------------------------------------------------------------------

def attention_oracle(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor,
                     slopes: torch.Tensor, scale: float, dout: torch.Tensor | None = None
                     ) -> tuple[torch.Tensor, ...]:
    """Varlen ALiBi attention in float64, one sequence and one head at a time.

    Returns ``(out,)`` or, with ``dout``, ``(out, dq, dk, dv)``, all (T, heads, d) float64. The
    backward is the analytic one (``dS = P * (dP - rowsum(dO * O))``), so memory stays at a few
    (L, L) float64 matrices whatever the number of heads.
    """
    q, k, v = q.double(), k.double(), v.double()
    grads = dout is not None
    out = torch.zeros_like(q)
    dq, dk, dv = (torch.zeros_like(q) for _ in range(3)) if grads else (None, None, None)
    bounds = cu_seqlens.tolist()
    slopes64 = slopes.double().tolist()
    for start, end in zip(bounds[:-1], bounds[1:]):
        if end == start:
            continue
        positions = torch.arange(end - start, device=q.device, dtype=torch.float64)
        distance = (positions[:, None] - positions[None, :]).abs()
        for head, slope in enumerate(slopes64):
            qh, kh, vh = q[start:end, head], k[start:end, head], v[start:end, head]
            probs = torch.softmax(qh @ kh.T * scale - slope * distance, dim=-1)
            oh = probs @ vh
            out[start:end, head] = oh
            if grads:
                doh = dout[start:end, head].double()
                dv[start:end, head] = probs.T @ doh
                dscores = probs * (doh @ vh.T - (doh * oh).sum(-1, keepdim=True))
                dq[start:end, head] = scale * dscores @ kh
                dk[start:end, head] = scale * dscores.T @ qh
    return (out, dq, dk, dv) if grads else (out,)


# --------------------------------------------------------------------------------------------
# Implementations
# --------------------------------------------------------------------------------------------

@dataclass
class Options:
    """Run-wide settings the implementations need."""

    device: torch.device
    triton_interpret: bool = False
    interpret_max_tokens: int = 1024
    flex_eager: bool = False
    max_dense_bytes: float = 8 * 2 ** 30
    alibi_starting_size: int = 4096
    cache: dict = field(default_factory=dict)


@dataclass
class Prepared:
    """A ready-to-time call and how to read its results back in packed form."""

    call: Callable[[], tuple[torch.Tensor, ...]]
    to_packed: Callable[[torch.Tensor], torch.Tensor] = lambda t: t
    state_bytes: int = 0
    notes: str = ""


def _with_mode(fn: Callable, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               dout: torch.Tensor, mode: str) -> Callable[[], tuple[torch.Tensor, ...]]:
    """The timed call: forward only (no autograd), or forward then ``autograd.grad``."""
    if mode == "fwd":
        def forward():
            with torch.no_grad():
                return (fn(q, k, v),)
        return forward
    leaves = tuple(t.detach().requires_grad_() for t in (q, k, v))

    def forward_backward():
        with torch.enable_grad():
            out = fn(*leaves)
            return (out.detach(), *torch.autograd.grad(out, leaves, dout))
    return forward_backward


def _check_dense_budget(nbytes: float, opts: Options, what: str) -> None:
    if nbytes > opts.max_dense_bytes:
        raise Unsupported(f"would materialise about {gib(nbytes)} of {what}, above the "
                          f"--max-dense-gib limit of {gib(opts.max_dense_bytes)}")


def _setup_ours_triton(inp: Inputs, case: Case, mode: str, opts: Options) -> Prepared:
    notes = ""
    if opts.device.type != "cuda":
        if not opts.triton_interpret:
            raise Unsupported("unsupported on this device: the Triton kernel needs a CUDA GPU; "
                              "on CPU only Triton's interpreter runs it (pass "
                              "--triton-interpret, tiny sizes only)")
        if os.environ.get("TRITON_INTERPRET") != "1":
            raise Unsupported("--triton-interpret needs TRITON_INTERPRET=1 in the environment "
                              "before triton is first imported")
        if case.total_tokens > opts.interpret_max_tokens:
            raise Unsupported(f"Triton interpreter: {case.total_tokens} tokens is above "
                              f"--interpret-max-tokens {opts.interpret_max_tokens} (too slow)")
        notes = "Triton interpreter on CPU: time and memory are not representative"
    try:
        from kernels.flash_attn import flash_attn_varlen_alibi
    except Exception as err:  # noqa: BLE001 - an unfinished or broken kernel module
        raise Unsupported(f"kernels.flash_attn is unavailable ({type(err).__name__}: {err})") \
            from None

    cu, max_seqlen, slopes = inp.cu_seqlens, inp.max_seqlen, inp.slopes

    def fn(q, k, v):
        return flash_attn_varlen_alibi(q, k, v, cu, max_seqlen, slopes, softmax_scale=inp.scale)
    return Prepared(_with_mode(fn, inp.q, inp.k, inp.v, inp.dout, mode), notes=notes)


def _setup_ours_sdpa(inp: Inputs, case: Case, mode: str, opts: Options) -> Prepared:
    from mosaic_encoder.attention import sdpa_varlen_alibi

    cu, slopes = inp.cu_seqlens, inp.slopes

    def fn(q, k, v):
        return sdpa_varlen_alibi(q, k, v, cu, slopes, softmax_scale=inp.scale)
    return Prepared(_with_mode(fn, inp.q, inp.k, inp.v, inp.dout, mode))


def _padded_inputs(inp: Inputs) -> tuple[torch.Tensor, ...]:
    return tuple(inp.to_padded(t) for t in (inp.q, inp.k, inp.v, inp.dout))


def _setup_sdpa_dense(inp: Inputs, case: Case, mode: str, opts: Options) -> Prepared:
    from mosaic_encoder.alibi import alibi_bias

    batch, width = len(case.seqlens), max(case.seqlens)
    score_bytes = batch * case.heads * width * width * 4
    _check_dense_budget(score_bytes * (2 if mode == "fwd" else 5), opts,
                        "(B, heads, S, S) bias and scores")
    qp, kp, vp, doutp = _padded_inputs(inp)
    _, mask = inp.padding()
    positions = torch.arange(width, device=opts.device)
    key_bias = torch.zeros(mask.shape, device=opts.device).masked_fill(~mask, float("-inf"))
    slopes, scale = inp.slopes, inp.scale

    def fn(q, k, v):
        bias = alibi_bias(slopes, positions, positions) + key_bias[:, None, None, :]
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale)
    return Prepared(_with_mode(fn, qp, kp, vp, doutp, mode), to_packed=inp.to_packed)


def _alibi_table(heads: int, size: int, opts: Options) -> torch.Tensor:
    """Upstream's (heads, N, N) float32 ALiBi table, built once and grown when too small."""
    from mosaic_encoder.alibi import alibi_bias, alibi_slopes

    key = ("alibi-table", heads)
    table = opts.cache.get(key)
    if table is None or table.shape[-1] < size:
        opts.cache.pop(key, None)
        positions = torch.arange(max(size, opts.alibi_starting_size), device=opts.device)
        table = alibi_bias(alibi_slopes(heads, device=opts.device), positions, positions)
        opts.cache[key] = table
    return table


def _setup_naive(inp: Inputs, case: Case, mode: str, opts: Options) -> Prepared:
    batch, width = len(case.seqlens), max(case.seqlens)
    score_bytes = batch * case.heads * width * width * 4
    table_size = max(width, opts.alibi_starting_size)
    table_bytes = case.heads * table_size * table_size * 4
    _check_dense_budget(score_bytes * (4 if mode == "fwd" else 7) + table_bytes, opts,
                        "(B, heads, S, S) bias, scores and probabilities plus the ALiBi table")
    table = _alibi_table(case.heads, width, opts)
    qp, kp, vp, doutp = _padded_inputs(inp)
    _, mask = inp.padding()
    sqrt_d = math.sqrt(case.head_dim)

    def fn(q, k, v):
        key_mask = (1.0 - mask[:, None, None, :].float()) * -10000.0
        bias = table[:, :width, :width] + key_mask
        scores = torch.matmul(q, k.transpose(-1, -2)) / sqrt_d + bias
        probs = F.softmax(scores, dim=-1).to(v.dtype)
        return torch.matmul(probs, v)
    return Prepared(_with_mode(fn, qp, kp, vp, doutp, mode), to_packed=inp.to_packed,
                    state_bytes=table.numel() * table.element_size(),
                    notes=f"ALiBi table built for N={table.shape[-1]}")


def _setup_flex(inp: Inputs, case: Case, mode: str, opts: Options) -> Prepared:
    try:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    except ImportError as err:
        raise Unsupported(f"this torch has no FlexAttention ({err})") from None
    if mode != "fwd" and opts.device.type == "cpu":
        raise Unsupported(f"FlexAttention has no backward on CPU (torch {torch.__version__})")
    total = case.total_tokens
    if opts.flex_eager:
        _check_dense_budget(total * total * case.heads * 4 * (3 if mode == "fwd" else 6), opts,
                            "(heads, T, T) scores of unfused (eager) FlexAttention")
    lengths = torch.tensor(case.seqlens, device=opts.device)
    document = torch.repeat_interleave(torch.arange(len(case.seqlens), device=opts.device),
                                       lengths)
    starts = inp.cu_seqlens[:-1].to(torch.int64)
    position = torch.arange(total, device=opts.device) - starts[document]
    slopes = inp.slopes

    def score_mod(score, b, h, q_idx, kv_idx):
        return score - slopes[h] * (position[q_idx] - position[kv_idx]).abs()

    def mask_mod(b, h, q_idx, kv_idx):
        return document[q_idx] == document[kv_idx]

    block_mask = create_block_mask(mask_mod, 1, None, total, total, device=opts.device)
    state = sum(t.numel() * t.element_size() for t in block_mask.as_tuple()
                if isinstance(t, torch.Tensor))
    if opts.flex_eager:
        attend, notes = flex_attention, "eager (unfused: materialises the (heads, T, T) scores)"
    else:
        if "flex" not in opts.cache:
            opts.cache["flex"] = torch.compile(flex_attention, dynamic=True)
        attend, notes = opts.cache["flex"], "torch.compile(dynamic=True); compiled in setup"

    def fn(q, k, v):
        # (T, heads, d) -> (1, heads, T, d) views, and back.
        with warnings.catch_warnings():  # eager flex warns that it is unfused: we know
            warnings.simplefilter("ignore", UserWarning)
            out = attend(q.transpose(0, 1)[None], k.transpose(0, 1)[None],
                         v.transpose(0, 1)[None], score_mod=score_mod, block_mask=block_mask,
                         scale=inp.scale)
        return out[0].transpose(0, 1)
    return Prepared(_with_mode(fn, inp.q, inp.k, inp.v, inp.dout, mode), state_bytes=state,
                    notes=notes)


SETUPS: dict[str, Callable[[Inputs, Case, str, Options], Prepared]] = {
    "ours-triton": _setup_ours_triton,
    "ours-sdpa": _setup_ours_sdpa,
    "sdpa-dense": _setup_sdpa_dense,
    "flex": _setup_flex,
    "naive": _setup_naive,
}


# --------------------------------------------------------------------------------------------
# One measurement
# --------------------------------------------------------------------------------------------

def _base_row(case: Case, impl: str, mode: str, env: dict) -> dict:
    row = dict.fromkeys(ATTENTION_FIELDS)
    tolerance, tolerance_grad = TOLERANCES[case.dtype]
    row.update(kind="attention", impl=impl, composition=case.composition, seqlen=case.seqlen,
               num_seqs=len(case.seqlens), total_tokens=case.total_tokens,
               padded_tokens=len(case.seqlens) * max(case.seqlens), heads=case.heads,
               head_dim=case.head_dim, dtype=case.dtype, mode=mode,
               real_pairs=real_pairs(case.seqlens), padded_pairs=padded_pairs(case.seqlens),
               flops=attention_flops(case.seqlens, case.heads, case.head_dim, mode),
               tolerance=tolerance, tolerance_grad=tolerance_grad if mode != "fwd" else None,
               device=env["device"], torch=env["torch"], triton=env["triton"],
               seqlens=list(case.seqlens))
    return row


def _is_oom(err: BaseException) -> bool:
    return isinstance(err, (MemoryError, torch.OutOfMemoryError)) or (
        isinstance(err, RuntimeError) and ("out of memory" in str(err).lower()
                                           or "can't allocate memory" in str(err).lower()))


def _max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b).abs().max()) if a.numel() else 0.0


def measure(impl: str, case: Case, mode: str, inp: Inputs, opts: Options, env: dict,
            oracle: Callable[[], tuple[torch.Tensor, ...] | str], *, min_run_time: float,
            min_samples: int) -> dict:
    """Run one implementation on one case; always returns a row (status ok/unsupported/failed).

    ``oracle()`` returns the float64 reference outputs, or a string saying why there are none.
    """
    row = _base_row(case, impl, mode, env)
    prepared = None
    try:
        start = time.perf_counter()
        prepared = SETUPS[impl](inp, case, mode, opts)
        row["notes"] = prepared.notes or None
        row["state_bytes"] = prepared.state_bytes
        wall_time(prepared.call, opts.device)  # warm-up: compiles, autotunes, fills caches
        row["setup_s"] = time.perf_counter() - start  # preparation plus the first call
        results, row["peak_bytes"], row["memory_method"] = peak_memory(prepared.call, opts.device)
        timing = time_call(prepared.call, opts.device, min_run_time=min_run_time,
                           min_samples=min_samples)
        row.update(time_ms=timing.median_s * 1e3, timer=timing.timer, samples=timing.samples,
                   time_ms_events=timing.events_median_s * 1e3 if timing.events_median_s
                   else None, status="ok")
        row["tflops"] = tflops(row["flops"], timing.median_s)
        packed = [prepared.to_packed(t) for t in results]
        del results
        prepared = None
        _release(opts.device)
        _check_errors(row, packed, oracle, mode)
    except KeyboardInterrupt:
        raise
    except Unsupported as err:
        row.update(status="unsupported", reason=str(err))
    except NotImplementedError as err:
        row.update(status="unsupported", reason=f"NotImplementedError: {_first_line(err)}")
    except Exception as err:  # noqa: BLE001 - every failure becomes a row, never a crash
        if _is_oom(err):
            row.update(status="unsupported", reason=f"out of memory: {_first_line(err)}")
        else:
            row.update(status="failed", reason=f"{type(err).__name__}: {_first_line(err)}")
            if os.environ.get("BENCH_TRACEBACK"):
                traceback.print_exc()
    finally:
        del prepared
        _release(opts.device)
    return row


def _check_errors(row: dict, packed: list[torch.Tensor],
                  oracle: Callable[[], tuple[torch.Tensor, ...] | str], mode: str) -> None:
    """Fill the error columns of an ok row; an oracle that cannot run leaves them null."""
    try:
        reference = oracle()
    except Exception as err:  # noqa: BLE001 - e.g. out of memory for the float64 oracle
        reference = f"failed: {type(err).__name__}: {_first_line(err)}"
    if isinstance(reference, str):
        row["oracle"] = reference
        return
    row["oracle"] = "float64"
    row["max_abs_err"] = _max_abs(packed[0], reference[0])
    if mode != "fwd":
        row["max_abs_err_grad"] = max(_max_abs(a, b) for a, b in zip(packed[1:], reference[1:]))
    row["within_tolerance"] = row["max_abs_err"] <= row["tolerance"] and (
        mode == "fwd" or row["max_abs_err_grad"] <= row["tolerance_grad"])


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:300] if text else type(err).__name__


def _release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# --------------------------------------------------------------------------------------------
# Sweep, output, command line
# --------------------------------------------------------------------------------------------

def _int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") \
            from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _choice_list(choices: Sequence[str]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        values = [part.strip() for part in text.split(",") if part.strip()]
        bad = [v for v in values if v not in choices]
        if bad or not values:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(choices)} "
                                             f"(comma-separated), got {text!r}")
        return values
    return parse


def attention_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m kernels.bench",
        description="Benchmark varlen ALiBi attention implementations (time, TFLOP/s, peak "
                    "memory, error against float64). `python -m kernels.bench model --help` for "
                    "the whole-model benchmark.")
    parser.add_argument("--device", default=None,
                        help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--impls", type=_choice_list(IMPLS), default=list(IMPLS),
                        help=f"comma-separated subset of {','.join(IMPLS)} (default: all)")
    parser.add_argument("--lengths", type=_int_list, default=None,
                        help="longest-sequence lengths to sweep (default: CPU 128..2048, "
                             "GPU 128..16384, powers of two)")
    parser.add_argument("--compositions", type=_choice_list(COMPOSITIONS),
                        default=list(COMPOSITIONS), help="single, equal, mixed (default: all)")
    parser.add_argument("--batch-tokens", type=int, default=None,
                        help="tokens per batch for 'equal' and 'mixed' (at least 2 x length; "
                             "default: CPU 4096, GPU 16384)")
    parser.add_argument("--heads", type=_int_list, default=[12], help="head counts (default 12)")
    parser.add_argument("--head-dims", type=_int_list, default=[64],
                        help="head dimensions (default 64)")
    parser.add_argument("--dtypes", type=_choice_list(tuple(DTYPES)), default=None,
                        help="float32, bfloat16, float16 (default: CPU float32, GPU bfloat16)")
    parser.add_argument("--modes", type=_choice_list(MODES), default=list(MODES),
                        help="fwd, fwd+bwd (default: both)")
    parser.add_argument("--min-run-time", type=float, default=None,
                        help="CPU: seconds of timed calls per row at least (default 1.0; "
                             "0.2 with --quick)")
    parser.add_argument("--min-samples", type=int, default=3,
                        help="CPU: timed calls per row at least (default 3)")
    parser.add_argument("--oracle-max-seqlen", type=int, default=None,
                        help="skip the float64 oracle above this sequence length (default: CPU "
                             "4096, GPU 16384)")
    parser.add_argument("--max-dense-gib", type=float, default=None,
                        help="report dense implementations that would materialise more than "
                             "this as unsupported (default: CPU min(8, RAM/3), GPU 80%% of its "
                             "memory)")
    parser.add_argument("--alibi-starting-size", type=int, default=4096,
                        help="N of the naive baseline's (heads, N, N) ALiBi table (default 4096, "
                             "lodestone's)")
    parser.add_argument("--flex-eager", action="store_true",
                        help="run FlexAttention without torch.compile (unfused, dense scores)")
    parser.add_argument("--triton-interpret", action="store_true",
                        help="CPU: run ours-triton in Triton's interpreter (needs "
                             "TRITON_INTERPRET=1; tiny sizes only)")
    parser.add_argument("--interpret-max-tokens", type=int, default=1024,
                        help="largest batch run in the Triton interpreter (default 1024)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true",
                        help="a short sweep: lengths CPU 128,512 / GPU 128,512,2048")
    parser.add_argument("--out", type=Path, default=None,
                        help="write results to this .json and the .csv beside it")
    return parser


def resolve_device(name: str | None) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda was requested but no CUDA GPU is available.")
    if device.type not in ("cpu", "cuda"):
        raise SystemExit(f"error: --device must be cpu or cuda, got {name!r}.")
    return device


def default_max_dense_bytes(device: torch.device) -> float:
    if device.type == "cuda":
        return 0.8 * torch.cuda.get_device_properties(device).total_memory
    from .measure import _total_memory

    total = _total_memory() or 24 * 2 ** 30
    return min(8 * 2 ** 30, total / 3)


def run_attention(args: argparse.Namespace, argv: Sequence[str]) -> dict:
    """Run the sweep described by parsed ``args``; returns the result document."""
    device = resolve_device(args.device)
    kind = device.type
    if args.threads:
        torch.set_num_threads(args.threads)
    lengths = args.lengths or (QUICK_LENGTHS if args.quick else DEFAULT_LENGTHS)[kind]
    dtypes = args.dtypes or (["float32"] if kind == "cpu" else ["bfloat16"])
    batch_tokens = args.batch_tokens or (4096 if kind == "cpu" else 16384)
    min_run_time = args.min_run_time if args.min_run_time is not None else \
        (0.2 if args.quick else 1.0)
    oracle_max = args.oracle_max_seqlen or (4096 if kind == "cpu" else 16384)
    opts = Options(device=device, triton_interpret=args.triton_interpret,
                   interpret_max_tokens=args.interpret_max_tokens, flex_eager=args.flex_eager,
                   max_dense_bytes=args.max_dense_gib * 2 ** 30 if args.max_dense_gib
                   else default_max_dense_bytes(device),
                   alibi_starting_size=args.alibi_starting_size)
    env = environment(device)
    settings = dict(device=str(device), impls=args.impls, lengths=lengths,
                    compositions=args.compositions, batch_tokens=batch_tokens, heads=args.heads,
                    head_dims=args.head_dims, dtypes=dtypes, modes=args.modes,
                    min_run_time=min_run_time, min_samples=args.min_samples,
                    oracle_max_seqlen=oracle_max, max_dense_bytes=opts.max_dense_bytes,
                    alibi_starting_size=args.alibi_starting_size, flex_eager=args.flex_eager,
                    triton_interpret=args.triton_interpret,
                    interpret_max_tokens=args.interpret_max_tokens, seed=args.seed,
                    threads=torch.get_num_threads())
    document = new_document("attention", argv, env, settings)
    print(f"# {env['device']} | torch {env['torch']} | triton {env['triton']}", flush=True)
    for dtype in dtypes:
        for heads in args.heads:
            for head_dim in args.head_dims:
                for composition in args.compositions:
                    for seqlen in lengths:
                        seqlens = composition_seqlens(composition, seqlen, batch_tokens,
                                                      args.seed)
                        case = Case(composition, seqlen, tuple(seqlens), heads, head_dim, dtype)
                        _run_case(case, args.modes, args.impls, opts, env, document, args,
                                  oracle_max, min_run_time)
    return document


def _run_case(case: Case, modes: Sequence[str], impls: Sequence[str], opts: Options, env: dict,
              document: dict, args: argparse.Namespace, oracle_max: int,
              min_run_time: float) -> None:
    inp = make_inputs(case, opts.device, args.seed)
    cached: dict[str, object] = {}

    def oracle_for(mode: str) -> Callable[[], tuple[torch.Tensor, ...] | str]:
        def get():
            if case.seqlen > oracle_max:
                return f"skipped: sequence length {case.seqlen} > --oracle-max-seqlen {oracle_max}"
            key = "grads" if "fwd+bwd" in modes else "fwd"
            if key not in cached:
                cached[key] = attention_oracle(
                    inp.q, inp.k, inp.v, inp.cu_seqlens, inp.slopes, inp.scale,
                    inp.dout if key == "grads" else None)
            return cached[key] if mode != "fwd" else cached[key][:1]
        return get

    for mode in modes:
        for impl in impls:
            row = measure(impl, case, mode, inp, opts, env, oracle_for(mode),
                          min_run_time=min_run_time, min_samples=args.min_samples)
            document["rows"].append(row)
            print(format_row(row), flush=True)
            if args.out:
                write_results(document, args.out)
    del inp, cached
    _release(opts.device)


def format_row(row: dict) -> str:
    """One console line per row."""
    head = (f"{row['impl']:<11} {row['composition']:<6} L={row['seqlen']:<6} "
            f"B={row['num_seqs']:<4} {row['dtype']:<8} {row['mode']:<7}")
    if row["status"] != "ok":
        return f"{head} {row['status'].upper()}: {row['reason']}"
    err = "-" if row["max_abs_err"] is None else f"{row['max_abs_err']:.1e}"
    if row.get("max_abs_err_grad") is not None:
        err += f"/{row['max_abs_err_grad']:.1e}"
    flag = "" if row["within_tolerance"] in (True, None) else "  OUT OF TOLERANCE"
    return (f"{head} {row['time_ms']:10.3f} ms {row['tflops']:8.3f} TFLOP/s "
            f"peak {gib(row['peak_bytes']):>10} err {err}{flag}")


def new_document(kind: str, argv: Sequence[str], env: dict, settings: dict) -> dict:
    from .flops import __doc__ as flops_doc
    from .measure import __doc__ as measure_doc

    return {
        "schema": SCHEMA,
        "kind": kind,
        "command": "python -m kernels.bench " + shlex.join(list(argv)),
        "argv": list(argv),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "environment": env,
        "settings": settings,
        "conventions": {"flops": " ".join(flops_doc.split()),
                        "time_and_memory": " ".join(measure_doc.split())},
        "rows": [],
    }


def write_results(document: dict, path: Path) -> tuple[Path, Path]:
    """Write ``path`` (.json) and the same stem with .csv; returns both paths."""
    path = Path(path)
    json_path = path if path.suffix == ".json" else path.with_suffix(".json")
    csv_path = json_path.with_suffix(".csv")
    json_path.parent.mkdir(parents=True, exist_ok=True)
    temporary = json_path.with_name(f".{json_path.name}.tmp")
    temporary.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    os.replace(temporary, json_path)
    rows = document["rows"]
    fields = list(dict.fromkeys(key for row in rows for key in row)) if rows else []
    with open(csv_path, "w", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: " ".join(map(str, v)) if isinstance(v, list) else v
                             for k, v in row.items()})
    return json_path, csv_path


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m kernels.bench`` and ``mosaic-encoder bench``.

    ``main(["model", ...])`` runs the whole-model benchmark, ``main(["report", FILE, ...])``
    prints Markdown tables of result files; anything else (optionally after ``"attention"``)
    runs the attention sweep. Returns the exit status: 0 when the run completed
    (unsupported rows included), 1 when a row failed unexpectedly or an error is out of tolerance.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "report":
        from .report import main as report_main

        return report_main(argv[1:])
    if argv and argv[0] == "model":
        from .bench_model import main as model_main

        return model_main(argv[1:], argv)
    if argv and argv[0] == "_model-child":
        from .bench_model import child_main

        return child_main(argv[1:])
    full = list(argv)
    if argv and argv[0] == "attention":
        argv = argv[1:]
    args = attention_parser().parse_args(argv)
    document = run_attention(args, full)
    if args.out:
        json_path, csv_path = write_results(document, args.out)
        print(f"# wrote {json_path} and {csv_path}", flush=True)
    return summarize(document["rows"])


def summarize(rows: list[dict]) -> int:
    counts = {s: sum(r["status"] == s for r in rows) for s in ("ok", "unsupported", "failed")}
    bad = sum(r.get("within_tolerance") is False for r in rows)
    print(f"# {len(rows)} rows: {counts['ok']} ok, {counts['unsupported']} unsupported, "
          f"{counts['failed']} failed, {bad} out of tolerance", flush=True)
    return 1 if counts["failed"] or bad else 0


if __name__ == "__main__":
    sys.exit(main())
