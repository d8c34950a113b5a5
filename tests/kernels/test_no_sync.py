"""No host-device synchronisation in the attention call or the model's layer loop.

On the CPU the proof runs on meta tensors, which have shapes and dtypes but no values: any
``.item()``, ``.tolist()``, ``int(t)`` or data-dependent branch on them raises. The kernel
launches are replaced by recorders (a meta tensor cannot be launched on); everything up to the
launch (validation, windowing bound, launch planning, autograd) runs for real. On a GPU the same
calls run under ``torch.cuda.set_sync_debug_mode("error")``.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is first imported

import pytest  # noqa: E402

from mosaic_kernels import flash_attn as fa  # noqa: E402
from mosaic_encoder import MosaicConfig  # noqa: E402
from mosaic_encoder.alibi import alibi_slopes  # noqa: E402
from mosaic_encoder.models import MosaicBertModel  # noqa: E402
from mosaic_encoder.padding import Packing  # noqa: E402

interpreted_only = pytest.mark.skipif(
    not fa._INTERPRET, reason="the attention impl 'triton' accepts non-CUDA tensors only when interpreted")


class _Recorder:
    """Stands in for a launcher: records the launch instead of running a kernel."""

    def __init__(self, calls, name):
        self.calls, self.name = calls, name

    def __call__(self, grid, *args, **kwargs):
        self.calls.append(self.name)

    def __getitem__(self, grid):  # the preprocessing kernel is launched as kernel[grid](...)
        return self


@pytest.fixture
def launches(monkeypatch):
    calls = []
    for name in ("_fwd", "_bwd_dkdv", "_bwd_dq", "_bwd_preprocess_kernel", "_key_bound_kernel",
                 "_reach_kernel", "_span_kernel"):
        monkeypatch.setattr(fa, name, _Recorder(calls, name))
    return calls


def _meta_inputs(total=300, heads=4, head_dim=32):
    q, k, v = (torch.empty(total, heads, head_dim, device="meta", requires_grad=True)
               for _ in range(3))
    cu_seqlens = torch.empty(4, dtype=torch.int32, device="meta")
    return q, k, v, cu_seqlens, torch.empty(heads, device="meta")


@pytest.mark.parametrize("window", ["always", True, False])
def test_attention_reads_no_tensor_value(launches, window):
    q, k, v, cu_seqlens, slopes = _meta_inputs()
    out = fa.flash_attn_varlen_alibi(q, k, v, cu_seqlens, 200, slopes, window=window)
    assert out.device.type == "meta" and out.shape == q.shape
    out.backward(torch.empty_like(out))
    windowed = window == "always"
    prepass = ["_key_bound_kernel", "_reach_kernel"] if windowed else []
    spans = ["_span_kernel"] if windowed else []
    assert launches == [*prepass, "_fwd", *spans, "_bwd_preprocess_kernel", "_bwd_dkdv", "_bwd_dq"]
    assert q.grad.shape == q.shape


def test_meta_tensors_do_catch_value_reads():
    """The proof above is only as good as meta tensors' refusal to give values."""
    _, _, _, cu_seqlens, _ = _meta_inputs()
    with pytest.raises((RuntimeError, NotImplementedError)):
        cu_seqlens.tolist()
    with pytest.raises((RuntimeError, NotImplementedError)):
        fa.check_cu_seqlens(cu_seqlens, 300, 200)


@interpreted_only
def test_layer_loop_reads_no_tensor_value(launches):
    config = MosaicConfig(vocab_size=64, hidden_size=64, num_hidden_layers=3,
                          num_attention_heads=4, intermediate_size=128, attention_impl="triton")
    with torch.device("meta"):
        model = MosaicBertModel(config).eval()
        hidden = torch.empty(300, 64)
        packing = Packing(indices=torch.empty(300, dtype=torch.int64),
                          cu_seqlens=torch.empty(4, dtype=torch.int32), max_seqlen=200,
                          batch_size=3, seqlen=200)
        positions = model.positions(packing)
    with torch.no_grad():
        out = model.encoder(hidden, packing, positions)
    assert out.shape == (300, 64) and launches == ["_fwd"] * 3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("window", ["always", True, False])
def test_cuda_attention_and_layer_loop_do_not_synchronise(window):
    lengths = [700, 0, 1500, 33]
    cu_seqlens = torch.tensor([0, *lengths], dtype=torch.int32).cumsum(0, dtype=torch.int32).cuda()
    total, heads = sum(lengths), 12
    q, k, v = (torch.randn(total, heads, 64, device="cuda", dtype=torch.bfloat16, requires_grad=True)
               for _ in range(3))
    slopes = alibi_slopes(heads, device="cuda")
    config = MosaicConfig(vocab_size=64, hidden_size=768, num_hidden_layers=2,
                          num_attention_heads=12, intermediate_size=3072, attention_impl="triton",
                          attention_window=bool(window))
    model = MosaicBertModel(config).cuda().to(torch.bfloat16).eval()
    hidden = torch.randn(total, 768, device="cuda", dtype=torch.bfloat16)
    packing = Packing(indices=torch.arange(total, device="cuda"), cu_seqlens=cu_seqlens,
                      max_seqlen=max(lengths), batch_size=len(lengths), seqlen=max(lengths))

    def step():
        out = fa.flash_attn_varlen_alibi(q, k, v, cu_seqlens, max(lengths), slopes, window=window)
        out.backward(torch.ones_like(out))
        with torch.no_grad():
            model.encoder(hidden, packing, model.positions(packing))

    step()  # compiles and autotunes (the autotuner's benchmarks synchronise)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
