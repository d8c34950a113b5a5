"""Block-size policy: the shipped configs, the shared-memory estimate and the pruner."""

import torch

from mosaic_kernels import tuning
from mosaic_kernels.windowing import SPAN_GRANULE

H100_SHARED = 227 * 1024  # per block, as the driver reports it for sm_90


def test_float32_ships_at_most_two_configs_per_kernel_and_head_dim():
    for kind in ("fwd", "dkdv", "dq"):
        for block_d in (16, 32, 64, 128):
            kept = tuning.fitting(kind, tuning.configs(kind, torch.float32), block_d, 4,
                                  H100_SHARED)
            assert 1 <= len(kept) <= 2


def test_pruner_keeps_what_fits_and_drops_configs_not_shipped_for_the_head_dim():
    """Forward 128 x 128 with 3 stages at head dim 128 takes 229,376 bytes (Q once, K and V three
    times): it fits sm_90's 232,448. 64 x 128 with 4 warps ships for head dim 64 only, and dQ
    128 x 32 with 4 warps and dK/dV 64 x 128 with 2 stages too (they spill inside the loop at
    128)."""
    fwd = tuning.fitting("fwd", tuning.configs("fwd", torch.bfloat16), 128, 2, H100_SHARED)
    shapes = {(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps, c.num_stages) for c in fwd}
    assert (128, 128, 8, 3) in shapes and (64, 128, 4, 3) not in shapes
    assert tuning.shared_memory_bytes("fwd", 128, 128, 128, 2, 3) == 229_376
    dq = tuning.fitting("dq", tuning.configs("dq", torch.bfloat16), 128, 2, H100_SHARED)
    assert (128, 32) not in {(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"]) for c in dq}
    dkdv = tuning.fitting("dkdv", tuning.configs("dkdv", torch.bfloat16), 128, 2, H100_SHARED)
    assert (64, 128, 2) not in {(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_stages)
                                for c in dkdv}
    at_64 = tuning.fitting("fwd", tuning.configs("fwd", torch.bfloat16), 64, 2, H100_SHARED)
    assert len(at_64) == len(tuning.configs("fwd", torch.bfloat16))


def test_two_forward_blocks_fit_an_sm_at_head_dim_64():
    assert 2 * tuning.shared_memory_bytes("fwd", 64, 128, 64, 2, 3) <= H100_SHARED


def test_nothing_fits_keeps_the_smallest():
    kept = tuning.fitting("dkdv", tuning.configs("dkdv", torch.bfloat16), 128, 2, 1024)
    assert len(kept) == 1


def test_every_block_is_a_multiple_of_the_span_granule():
    """The dK/dV kernel reads its query span per granule of keys (``windowing.SPAN_GRANULE``)
    and rounds query positions to its blocks: both block sizes of every config are multiples."""
    for kind in ("fwd", "dkdv", "dq"):
        blocks = [tuning.INTERPRETED[kind]] + [
            config.kwargs for dtype in (torch.float16, torch.float32)
            for config in tuning.configs(kind, dtype)]
        for block in blocks:
            assert block["BLOCK_M"] % SPAN_GRANULE == 0 and block["BLOCK_N"] % SPAN_GRANULE == 0
