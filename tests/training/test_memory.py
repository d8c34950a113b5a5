"""Training activations grow linearly with the sequence length (counted tensor by tensor)."""

from mosaic_encoder.loading import load_model
from mosaic_encoder.models import unwrap_encoder
from mosaic_encoder.pooling import Pooling
from mosaic_encoder.training.memory import step_memory
from mosaic_encoder.training.model import SentenceModel

from helpers import TINY


def test_activation_memory_is_linear_in_sequence_length():
    model = SentenceModel(unwrap_encoder(load_model(TINY)), Pooling()).train()
    saved = {n: step_memory(model, n).saved_bytes for n in (256, 512, 1024)}
    first, second = saved[512] - saved[256], saved[1024] - saved[512]
    # Linear: doubling the added length doubles the added bytes. Storing the (heads, L, L)
    # attention probabilities would add 12 * 4 * (1024^2 - 512^2) bytes per layer here instead.
    assert abs(second - 2 * first) <= 0.02 * second, saved
    assert all(m.grad is None for m in model.parameters())
