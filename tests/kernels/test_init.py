"""The ``mosaic_kernels`` package imports in pieces: its plain-PyTorch modules load without
Triton, so the CPU path never pays for (or needs) it."""

import subprocess
import sys
import textwrap

_BLOCK_TRITON = textwrap.dedent("""
    import importlib.abc, sys

    class NoTriton(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "triton" or name.startswith("triton."):
                raise ImportError(f"{name} is blocked by the test")
            return None

    sys.meta_path.insert(0, NoTriton())
""")


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _BLOCK_TRITON + textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=120)


def test_windowing_reference_support_and_the_attention_registry_import_without_triton():
    result = _run("""
        import torch
        from mosaic_kernels import reference, support, windowing
        import mosaic_encoder.attention
        q = k = v = torch.ones(4, 1, 16)
        assert windowing.key_reach(q, k, v, torch.ones(1), 0.25).shape == (1, 4)
        cu = torch.tensor([0, 4], dtype=torch.int32)
        assert reference.attention(q, k, v, cu, torch.ones(1))[0].shape == (4, 1, 16)
        assert not any(name == "triton" or name.startswith("triton.") for name in sys.modules)
    """)
    assert result.returncode == 0, result.stderr


def test_the_kernel_itself_needs_triton():
    """The block is real: the kernel module fails to import."""
    result = _run("""
        import mosaic_kernels.flash_attn
    """)
    assert result.returncode != 0 and "triton is blocked by the test" in result.stderr
