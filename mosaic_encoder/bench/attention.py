"""Attention benchmarks: ALiBi attention over packed variable-length batches, five ways.

``python -m mosaic_encoder.bench attention --help`` (or ``mosaic-encoder bench attention``).
The columns of its rows are defined in :mod:`.results`; docs/benchmarks.md explains the
method.

Implementations (all get the same packed inputs q, k, v (T, heads, head_dim), ``cu_seqlens`` and
the ALiBi slopes):

``ours-triton``  the fused Triton kernel ``mosaic_kernels.flash_attn.flash_attn_varlen_alibi``.
                 On a CPU it only runs in Triton's interpreter: reported as unsupported unless
                 ``--triton-interpret`` is given (with TRITON_INTERPRET=1 in the environment) and
                 the batch has at most ``--interpret-max-tokens`` tokens.
``ours-sdpa``    ``mosaic_encoder.attention.sdpa_varlen_alibi``, the plain-PyTorch chunked path
                 the model uses on CPU.

Both of ours run with exact ALiBi windowing (skipping keys of provably zero weight) as
``--window`` says: on (the default), off, or both (a row each); their rows record ``window``,
the other implementations' rows leave it null. Their rows also carry the FLOPs
executed (``executed_flops``, ``executed_tflops``), beside the dense FLOPs credited to every
implementation; without windowing the two are equal. ``ours-triton``, forward only: the (query,
key) pairs of the tiles the kernel visited, counted on the CPU by ``mosaic_kernels.windowing``
with the block sizes of the launch (its backward kernels' visits are counted in tiles, not
pairs: ``fwd+bwd`` rows report none). ``ours-sdpa``: the pairs of its own plan
(``mosaic_encoder.attention.sdpa_visited_pairs``), in both modes (its backward recomputes each
chunk over the same keys, so 3.5 x the forward, as credited).
``sdpa-dense``   ``torch.nn.functional.scaled_dot_product_attention`` on the padded batch with a
                 dense (B, heads, S, S) ALiBi + key-padding bias built in float32 in the call
                 and handed over in the input dtype (SDPA takes a float mask of the query's
                 dtype only; in bfloat16 this rounds the bias).
``flex``         FlexAttention on the packed tokens with an ALiBi ``score_mod`` and a document
                 ``block_mask``; ``torch.compile``d (``dynamic=True``, compiled once, in setup)
                 unless ``--flex-eager`` (the default on CPU, where compiling takes minutes).
``naive``        the attention of :mod:`mosaic_encoder.baseline`, upstream's computation: a
                 (heads, N, N) float32 ALiBi table built ahead (N = max(S,
                 ``--alibi-starting-size``), reported as ``state_bytes``); per call the
                 (B, heads, S, S) float32 bias ``table + (-10000 * key padding)``, products in
                 the input dtype, bias and softmax in float32, ``P V``.

Padded implementations get their padded (B, heads, S, d) inputs prepared outside the timed call
and are credited only the real query-key pairs (:mod:`.flops`). Errors are measured against the
float64 reference ``mosaic_kernels.reference`` (forward and analytic backward), on the real
tokens only: padded query rows, which attend to nothing real, never enter an error.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import time
import traceback
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F

from mosaic_kernels import reference

from ..alibi import alibi_bias, alibi_slopes
from ..attention import sdpa_varlen_alibi, sdpa_visited_pairs
from ..baseline import AlibiTable, dense_attention
from ..dtypes import DTYPES
from ..padding import Packing, pad, unpad
from .flops import attention_flops, padded_pairs, real_pairs, tflops
from .measure import (environment, gib, peak_memory, release, resolve_device, time_call,
                      default_max_dense_bytes, wall_time)
from .names import COMPOSITIONS, IMPLEMENTATIONS
from .results import (Unsupported, first_line, is_out_of_memory, new_document, row_label,
                      window_settings, write_results)

IMPLS = IMPLEMENTATIONS["attention"]
WINDOWED = ("ours-triton", "ours-sdpa")  # the implementations --window applies to
# Max |error| against the float64 reference, for inputs drawn from N(0, 1): (output, gradients).
TOLERANCES = {"float32": (1e-4, 1e-3), "float16": (5e-3, 5e-2), "bfloat16": (4e-2, 4e-1)}
DEFAULT_LENGTHS = {"cpu": (128, 256, 512, 1024, 2048), "cuda": tuple(2 ** i for i in range(7, 15))}
# --quick (a minute on a loaded 2-core CPU): single and mixed batches, one timed call per row.
QUICK = dict(lengths={"cpu": (256,), "cuda": (512, 2048)}, compositions=("single", "mixed"),
             batch_tokens={"cpu": 512, "cuda": 4096}, min_run_time=0.0, min_samples=1)

ATTENTION_FIELDS = (
    "kind", "impl", "window", "composition", "seqlen", "num_seqs", "total_tokens", "padded_tokens",
    "heads", "head_dim", "dtype", "mode", "status", "reason", "notes",
    "time_ms", "time_ms_events", "timer", "samples", "real_pairs", "padded_pairs", "flops",
    "tflops", "executed_flops", "executed_tflops", "peak_bytes", "memory_method", "state_bytes",
    "setup_s", "max_abs_err", "max_abs_err_grad", "tolerance", "tolerance_grad",
    "within_tolerance", "oracle", "device", "torch", "triton", "seqlens")


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
    _packing: Packing | None = field(default=None, init=False, repr=False)

    @property
    def max_seqlen(self) -> int:
        return max(self.seqlens)

    def key_mask(self) -> torch.Tensor:
        """(B, S) bool, True at the real tokens of the right-padded batch."""
        lengths = torch.tensor(self.seqlens, device=self.q.device)
        return torch.arange(self.max_seqlen, device=self.q.device)[None, :] < lengths[:, None]

    def packing(self) -> Packing:
        """The model's packing of the right-padded batch (built once)."""
        if self._packing is None:
            self._packing = Packing.from_mask(self.key_mask())
        return self._packing

    def to_padded(self, packed: torch.Tensor) -> torch.Tensor:
        """(T, heads, d) -> contiguous (B, heads, S, d), zeros at padded positions."""
        return pad(packed, self.packing()).transpose(1, 2).contiguous()

    def to_packed(self, padded: torch.Tensor) -> torch.Tensor:
        """(B, heads, S, d) -> (T, heads, d), real tokens only."""
        return unpad(padded.transpose(1, 2), self.packing())


def make_inputs(case: Case, device: torch.device, seed: int = 0) -> Inputs:
    """Standard-normal q, k, v and output gradient, drawn in float32 then cast to the dtype."""
    generator = torch.Generator().manual_seed(seed)
    shape = (case.total_tokens, case.heads, case.head_dim)
    q, k, v, dout = (torch.randn(shape, generator=generator).to(device=device,
                                                                 dtype=DTYPES[case.dtype])
                     for _ in range(4))
    cu = torch.zeros(len(case.seqlens) + 1, dtype=torch.int32)
    cu[1:] = torch.tensor(case.seqlens).cumsum(0)
    return Inputs(q, k, v, dout, cu.to(device), alibi_slopes(case.heads, device=device),
                  list(case.seqlens), 1.0 / math.sqrt(case.head_dim))


def reference_outputs(inp: Inputs, grads: bool) -> tuple[torch.Tensor, ...]:
    """The float64 reference: ``(out,)`` or ``(out, dq, dk, dv)``, each (T, heads, d)."""
    if not grads:
        return (reference.attention(inp.q, inp.k, inp.v, inp.cu_seqlens, inp.slopes,
                                    inp.scale)[0],)
    ref = reference.attention_with_grads(inp.q, inp.k, inp.v, inp.dout, inp.cu_seqlens,
                                         inp.slopes, inp.scale)
    return ref.out, ref.dq, ref.dk, ref.dv


# --------------------------------------------------------------------------------------------
# Implementations
# --------------------------------------------------------------------------------------------

@dataclass
class Options:
    """Run-wide settings the implementations need; ``window``: exact ALiBi windowing of ours
    (:func:`dataclasses.replace` makes the options of each setting, sharing ``cache``)."""

    device: torch.device
    triton_interpret: bool = False
    interpret_max_tokens: int = 1024
    flex_eager: bool = False
    max_dense_bytes: float = 8 * 2 ** 30
    alibi_starting_size: int = 4096
    window: bool | str = True
    cache: dict = field(default_factory=dict)


@dataclass
class Prepared:
    """A ready-to-time call and how to read its results back in packed form.

    ``executed_flops``: where an implementation can say how much work one call really did
    (e.g. a kernel that skips key blocks whose weights underflow reports its visited blocks),
    a function returning those FLOPs after a call; the row then carries ``executed_flops`` and
    ``executed_tflops`` beside the credited (dense) figures. None: not reported.
    """

    call: Callable[[], tuple[torch.Tensor, ...]]
    to_packed: Callable[[torch.Tensor], torch.Tensor] = lambda t: t
    state_bytes: int = 0
    notes: str = ""
    executed_flops: Callable[[], int] | None = None


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
        from mosaic_kernels.flash_attn import flash_attn_varlen_alibi
    except Exception as err:  # noqa: BLE001 - an unfinished or broken kernel module
        raise Unsupported(f"mosaic_kernels is unavailable ({type(err).__name__}: {err})") \
            from None

    cu, max_seqlen, slopes, window = inp.cu_seqlens, inp.max_seqlen, inp.slopes, opts.window

    def fn(q, k, v):
        return flash_attn_varlen_alibi(q, k, v, cu, max_seqlen, slopes, softmax_scale=inp.scale,
                                       window=window)
    executed = _triton_executed_flops(inp, case, window) if mode == "fwd" else None
    return Prepared(_with_mode(fn, inp.q, inp.k, inp.v, inp.dout, mode), notes=notes,
                    executed_flops=executed)


def _triton_executed_flops(inp: Inputs, case: Case, window: bool | str) -> Callable[[], int]:
    """FLOPs of the forward kernel's visited tiles, with the block sizes of its last launch."""
    from mosaic_kernels import flash_attn
    from mosaic_kernels.windowing import executed_forward_flops, window_pays

    windowed = window == flash_attn.WINDOW_ALWAYS or (
        window is True and window_pays(inp.max_seqlen, case.heads))

    def executed() -> int:
        blocks = flash_attn.block_sizes("fwd", inp.q.dtype)
        if blocks is None:
            raise RuntimeError("the forward kernel reports no block sizes after a launch")
        # The kernel's own bound on the same inputs: the reach its pre-pass computes.
        reach = flash_attn.window_reach(inp.q, inp.k, inp.v, inp.slopes, inp.scale) \
            if windowed else None
        return executed_forward_flops(reach, inp.cu_seqlens, case.heads, case.head_dim,
                                      blocks["BLOCK_M"], blocks["BLOCK_N"])
    return executed


def _setup_ours_sdpa(inp: Inputs, case: Case, mode: str, opts: Options) -> Prepared:
    cu, slopes, window = inp.cu_seqlens, inp.slopes, bool(opts.window)  # "always": on

    def fn(q, k, v):
        return sdpa_varlen_alibi(q, k, v, cu, slopes, softmax_scale=inp.scale, window=window)

    def executed() -> int:
        # The backward recomputes each chunk over the same keys: 3.5 x forward, as credited.
        pairs = sdpa_visited_pairs(inp.q, inp.k, inp.v, cu, slopes, softmax_scale=inp.scale,
                                   window=window)
        forward = 4 * case.head_dim * pairs
        return forward if mode == "fwd" else forward + forward * 5 // 2
    return Prepared(_with_mode(fn, inp.q, inp.k, inp.v, inp.dout, mode), executed_flops=executed)


def _padded_inputs(inp: Inputs) -> tuple[torch.Tensor, ...]:
    return tuple(inp.to_padded(t) for t in (inp.q, inp.k, inp.v, inp.dout))


def _setup_sdpa_dense(inp: Inputs, case: Case, mode: str, opts: Options) -> Prepared:
    batch, width = len(case.seqlens), max(case.seqlens)
    score_bytes = batch * case.heads * width * width * 4
    _check_dense_budget(score_bytes * (2 if mode == "fwd" else 5), opts,
                        "(B, heads, S, S) bias and scores")
    qp, kp, vp, doutp = _padded_inputs(inp)
    positions = torch.arange(width, device=opts.device)
    # Padded keys get the most negative finite value, not -inf: every row keeps a finite
    # maximum, so no backend meets an all -inf row. Padded query rows never enter the error.
    lowest = torch.finfo(DTYPES[case.dtype]).min
    key_bias = torch.zeros(inp.key_mask().shape, device=opts.device)
    key_bias.masked_fill_(~inp.key_mask(), lowest)
    slopes, scale, dtype = inp.slopes, inp.scale, DTYPES[case.dtype]

    def fn(q, k, v):
        bias = (alibi_bias(slopes, positions, positions) + key_bias[:, None, None, :])
        bias = bias.clamp(min=lowest).to(dtype)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale)
    notes = None if dtype == torch.float32 else f"bias rounded to {case.dtype} (SDPA's mask dtype)"
    return Prepared(_with_mode(fn, qp, kp, vp, doutp, mode), to_packed=inp.to_packed,
                    notes=notes or "")


def _setup_naive(inp: Inputs, case: Case, mode: str, opts: Options) -> Prepared:
    batch, width = len(case.seqlens), max(case.seqlens)
    score_bytes = batch * case.heads * width * width * 4
    table_size = max(width, opts.alibi_starting_size)
    table_bytes = case.heads * table_size * table_size * 4
    _check_dense_budget(score_bytes * (4 if mode == "fwd" else 7) + table_bytes, opts,
                        "(B, heads, S, S) bias, scores and probabilities plus the ALiBi table")
    key = ("alibi-table", case.heads)
    if key not in opts.cache:
        opts.cache[key] = AlibiTable(alibi_slopes(case.heads, device=opts.device),
                                     opts.alibi_starting_size)
    alibi = opts.cache[key]
    qp, kp, vp, doutp = _padded_inputs(inp)
    mask = inp.key_mask()

    def fn(q, k, v):
        return dense_attention(q, k, v, alibi.bias(mask))
    alibi.grow(width)  # now, not inside a timed call
    return Prepared(_with_mode(fn, qp, kp, vp, doutp, mode), to_packed=inp.to_packed,
                    state_bytes=alibi.nbytes, notes=f"ALiBi table built for N={alibi.table.shape[-1]}")


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

def _base_row(case: Case, impl: str, mode: str, env: dict, window: bool) -> dict:
    row = dict.fromkeys(ATTENTION_FIELDS)
    tolerance, tolerance_grad = TOLERANCES[case.dtype]
    row.update(kind="attention", impl=impl, window=window if impl in WINDOWED else None,
               composition=case.composition, seqlen=case.seqlen,
               num_seqs=len(case.seqlens), total_tokens=case.total_tokens,
               padded_tokens=len(case.seqlens) * max(case.seqlens), heads=case.heads,
               head_dim=case.head_dim, dtype=case.dtype, mode=mode,
               real_pairs=real_pairs(case.seqlens), padded_pairs=padded_pairs(case.seqlens),
               flops=attention_flops(case.seqlens, case.heads, case.head_dim, mode),
               tolerance=tolerance, tolerance_grad=tolerance_grad if mode != "fwd" else None,
               device=env["device"], torch=env["torch"], triton=env["triton"],
               seqlens=list(case.seqlens))
    return row


def _max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b).abs().max()) if a.numel() else 0.0


def measure(impl: str, case: Case, mode: str, inp: Inputs, opts: Options, env: dict,
            oracle: Callable[[], tuple[torch.Tensor, ...] | str], *, min_run_time: float,
            min_samples: int) -> dict:
    """Run one implementation on one case; always returns a row (status ok/unsupported/failed).

    ``oracle()`` returns the float64 reference outputs, or a string saying why there are none.
    ``opts.window`` applies to the implementations of :data:`WINDOWED` (and is recorded there).
    """
    row = _base_row(case, impl, mode, env, opts.window)
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
        if prepared.executed_flops is not None:
            row["executed_flops"] = prepared.executed_flops()
            row["executed_tflops"] = tflops(row["executed_flops"], timing.median_s)
        packed = [prepared.to_packed(t) for t in results]
        del results
        prepared = None
        release(opts.device)
        _check_errors(row, packed, oracle, mode)
    except KeyboardInterrupt:
        raise
    except Unsupported as err:
        row.update(status="unsupported", reason=str(err))
    except NotImplementedError as err:
        row.update(status="unsupported", reason=f"NotImplementedError: {first_line(err)}")
    except Exception as err:  # noqa: BLE001 - every failure becomes a row, never a crash
        if is_out_of_memory(err):
            row.update(status="unsupported", reason=f"out of memory: {first_line(err)}")
        else:
            row.update(status="failed", reason=f"{type(err).__name__}: {first_line(err)}")
            if os.environ.get("BENCH_TRACEBACK"):
                traceback.print_exc()
    finally:
        del prepared
        release(opts.device)
    return row


def _check_errors(row: dict, packed: list[torch.Tensor],
                  oracle: Callable[[], tuple[torch.Tensor, ...] | str], mode: str) -> None:
    """Fill the error columns of an ok row; an oracle that cannot run leaves them null."""
    try:
        expected = oracle()
    except Exception as err:  # noqa: BLE001 - e.g. out of memory for the float64 oracle
        expected = f"failed: {type(err).__name__}: {first_line(err)}"
    if isinstance(expected, str):
        row["oracle"] = expected
        return
    row["oracle"] = "float64"
    row["max_abs_err"] = _max_abs(packed[0], expected[0])
    if mode != "fwd":
        row["max_abs_err_grad"] = max(_max_abs(a, b) for a, b in zip(packed[1:], expected[1:]))
    row["within_tolerance"] = row["max_abs_err"] <= row["tolerance"] and (
        mode == "fwd" or row["max_abs_err_grad"] <= row["tolerance_grad"])


# --------------------------------------------------------------------------------------------
# The sweep
# --------------------------------------------------------------------------------------------

def run_attention(args: argparse.Namespace, argv: Sequence[str]) -> dict:
    """Run the sweep described by ``args`` (parsed by :mod:`.cli`); returns the document."""
    device = resolve_device(args.device)
    kind = device.type
    if args.threads:
        torch.set_num_threads(args.threads)
    lengths = args.lengths or (QUICK["lengths"] if args.quick else DEFAULT_LENGTHS)[kind]
    compositions = args.compositions or (QUICK["compositions"] if args.quick else COMPOSITIONS)
    dtypes = args.dtypes or (["float32"] if kind == "cpu" else ["bfloat16"])
    batch_tokens = args.batch_tokens or (QUICK["batch_tokens"][kind] if args.quick else
                                         (4096 if kind == "cpu" else 16384))
    min_samples = args.min_samples or (QUICK["min_samples"] if args.quick else 3)
    min_run_time = args.min_run_time if args.min_run_time is not None else \
        (QUICK["min_run_time"] if args.quick else 1.0)
    oracle_max = args.oracle_max_seqlen or (4096 if kind == "cpu" else 16384)
    # Compiling FlexAttention for the CPU takes minutes: a quick CPU run uses it eagerly.
    flex_eager = args.flex_eager or (args.quick and kind == "cpu")
    opts = Options(device=device, triton_interpret=args.triton_interpret,
                   interpret_max_tokens=args.interpret_max_tokens, flex_eager=flex_eager,
                   max_dense_bytes=args.max_dense_gib * 2 ** 30 if args.max_dense_gib
                   else default_max_dense_bytes(device),
                   alibi_starting_size=args.alibi_starting_size)
    windows = window_settings(args.window)
    env = environment(device)
    settings = dict(device=str(device), impls=args.impls, lengths=list(lengths),
                    compositions=list(compositions), batch_tokens=batch_tokens,
                    heads=args.heads, head_dims=args.head_dims, dtypes=dtypes, modes=args.modes,
                    min_run_time=min_run_time, min_samples=min_samples,
                    oracle_max_seqlen=oracle_max, max_dense_bytes=opts.max_dense_bytes,
                    alibi_starting_size=args.alibi_starting_size, window=args.window,
                    flex_eager=flex_eager,
                    triton_interpret=args.triton_interpret,
                    interpret_max_tokens=args.interpret_max_tokens, seed=args.seed,
                    threads=torch.get_num_threads())
    document = new_document("attention", argv, env, settings)
    print(f"# {env['device']} | torch {env['torch']} | triton {env['triton']}", flush=True)
    for dtype in dtypes:
        for heads in args.heads:
            for head_dim in args.head_dims:
                for composition in compositions:
                    for seqlen in lengths:
                        seqlens = composition_seqlens(composition, seqlen, batch_tokens,
                                                      args.seed)
                        case = Case(composition, seqlen, tuple(seqlens), heads, head_dim, dtype)
                        _run_case(case, args, opts, windows, env, document, oracle_max,
                                  min_run_time, min_samples)
    return document


def _run_case(case: Case, args: argparse.Namespace, opts: Options, windows: tuple[bool, ...],
              env: dict, document: dict, oracle_max: int, min_run_time: float,
              min_samples: int) -> None:
    inp = make_inputs(case, opts.device, args.seed)
    cached: dict[bool, tuple[torch.Tensor, ...]] = {}
    grads = "fwd+bwd" in args.modes  # one reference serves both modes

    def oracle_for(mode: str) -> Callable[[], tuple[torch.Tensor, ...] | str]:
        def get():
            if case.seqlen > oracle_max:
                return f"skipped: sequence length {case.seqlen} > --oracle-max-seqlen {oracle_max}"
            if grads not in cached:
                cached[grads] = reference_outputs(inp, grads)
            return cached[grads] if mode != "fwd" else cached[grads][:1]
        return get

    for mode in args.modes:
        for impl in args.impls:
            for window in windows if impl in WINDOWED else windows[:1]:
                row = measure(impl, case, mode, inp, replace(opts, window=window), env,
                              oracle_for(mode), min_run_time=min_run_time,
                              min_samples=min_samples)
                document["rows"].append(row)
                print(format_row(row), flush=True)
                if args.out:
                    write_results(document, args.out)
    del inp, cached
    release(opts.device)


def format_row(row: dict) -> str:
    """One console line per row."""
    head = (f"{row_label(row):<22} {row['composition']:<6} L={row['seqlen']:<6} "
            f"B={row['num_seqs']:<4} {row['dtype']:<8} {row['mode']:<7}")
    if row["status"] != "ok":
        return f"{head} {row['status'].upper()}: {row['reason']}"
    err = "-" if row["max_abs_err"] is None else f"{row['max_abs_err']:.1e}"
    if row.get("max_abs_err_grad") is not None:
        err += f"/{row['max_abs_err_grad']:.1e}"
    flag = "" if row["within_tolerance"] in (True, None) else "  OUT OF TOLERANCE"
    executed = "" if row.get("executed_tflops") is None else \
        f" ({row['executed_tflops']:.3f} executed)"
    return (f"{head} {row['time_ms']:10.3f} ms {row['tflops']:8.3f} TFLOP/s{executed} "
            f"peak {gib(row['peak_bytes']):>10} err {err}{flag}")
