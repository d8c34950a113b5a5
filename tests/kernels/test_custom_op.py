"""The kernel as a torch.library custom operator: fake implementation, autograd, same numbers."""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is first imported

from mosaic_kernels.flash_attn import flash_attn_varlen_alibi  # noqa: E402
from mosaic_kernels.custom_op import flash_attn_varlen_alibi_op  # noqa: E402
from mosaic_encoder.alibi import alibi_slopes  # noqa: E402
from helpers import packed_qkv  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _arguments(lengths, max_seqlen, requires_grad=False):
    q, k, v, cu = (t.to(DEVICE) for t in packed_qkv(lengths, 2, 16, seed=len(lengths)))
    slopes = alibi_slopes(2, device=DEVICE) * 8
    q, k, v, slopes = (t.requires_grad_(requires_grad) for t in (q, k, v, slopes))
    return q, k, v, cu, max_seqlen, slopes


def test_operator_passes_torch_library_opcheck():
    """Schema, fake (meta) implementation, autograd registration (learned slopes included) and
    dispatch agree."""
    torch.library.opcheck(flash_attn_varlen_alibi_op, _arguments([5, 0, 3], 6, requires_grad=True))


def test_operator_equals_the_function_with_gradients():
    """Same output, and the recomputing backward gives the kernel's own gradients, the slopes'
    included; a max_seqlen above the longest sequence (as the compiled padded rows pass)
    changes nothing."""
    q, k, v, cu, _, slopes = _arguments([7, 1, 4], 0, requires_grad=True)
    grad_out = torch.randn_like(q)
    results = []
    for call, max_seqlen in ((flash_attn_varlen_alibi, 7), (flash_attn_varlen_alibi_op, 9)):
        out = call(q, k, v, cu, max_seqlen, slopes)
        results.append((out.detach(), *torch.autograd.grad(out, (q, k, v, slopes), grad_out)))
    for ours, reference in zip(*results):
        torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-6)


def test_fixed_slopes_get_no_gradient_through_the_operator():
    q, k, v, cu, _, slopes = _arguments([6, 2], 0, requires_grad=True)
    out = flash_attn_varlen_alibi_op(q, k, v, cu, 6, slopes.detach())
    assert len(torch.autograd.grad(out.sum(), (q, k, v))) == 3


def test_fake_implementation_gives_shapes_without_values():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode() as mode:
        q, k, v, cu, max_seqlen, slopes = (mode.from_tensor(t) if isinstance(t, torch.Tensor)
                                           else t for t in _arguments([3, 2], 3))
        out = flash_attn_varlen_alibi_op(q, k, v, cu, max_seqlen, slopes)
    assert out.shape == (5, 2, 16) and out.dtype == torch.float32
