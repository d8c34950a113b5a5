import torch

import mosaic_encoder as me
from helpers import WEIGHTS
from mosaic_encoder.tracing import trace_shapes


def test_trace_records_packed_shapes_and_removes_hooks():
    model = me.load_model(WEIGHTS / "mosaic-tiny")
    ids = torch.tensor([[101, 7592, 2088, 102], [101, 102, 0, 0]])
    records = {r.module: r for r in trace_shapes(model, ids, (ids != 0).long())}
    assert records["embeddings"].output_shape == (6, 192)  # 6 real tokens, packed
    assert records["encoder.layer.0.attention.self.Wqkv"].output_shape == (6, 576)
    assert records["encoder.layer.1.mlp.gated_layers"].output_shape == (6, 1024)
    assert records["pooler"].output_shape == (2, 192)
    assert not any(m._forward_hooks for m in model.modules())
