"""FLOP accounting (mosaic_encoder.bench.flops), checked on hand-computed cases."""

import pytest

from mosaic_encoder.bench.flops import attention_flops, padded_pairs, real_pairs, tflops


def test_flops_hand_computed():
    # Sequences of 3 and 2 tokens: 3*3 + 2*2 = 13 real pairs per head (a padded batch does 18).
    assert real_pairs([3, 2]) == 13
    assert padded_pairs([3, 2]) == 18
    # forward: 2 heads x 13 pairs x (2 products x 2 FLOPs x head_dim 4) = 416
    assert attention_flops([3, 2], heads=2, head_dim=4, mode="fwd") == 416
    # forward + backward = 3.5 x forward
    assert attention_flops([3, 2], heads=2, head_dim=4, mode="fwd+bwd") == 1456
    assert tflops(2 * 10 ** 12, 0.5) == pytest.approx(4.0)
    assert tflops(10, 0.0) is None
    with pytest.raises(ValueError):
        attention_flops([3], 1, 1, mode="bwd")


def test_lodestone_scale_flops():
    # One 4096-token sequence, 12 heads of 64: 4 * 64 * 12 * 4096^2 = 51.54 GFLOP forward.
    assert attention_flops([4096], 12, 64) == 4 * 64 * 12 * 4096 ** 2 == 51_539_607_552
