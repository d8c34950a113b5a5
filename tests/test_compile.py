"""``torch.compile`` of whole models: one graph, no break, no recompilation, eager's numbers.

Most tests compile through ``aot_eager``: dynamo and AOTAutograd trace exactly what inductor would
(graph breaks, guards and recompilations are decided there) at a fraction of the compile time on
a 2-core machine. One test runs inductor itself.
"""

import pytest
import torch
from torch._dynamo.utils import counters

import mosaic_encoder as me
from helpers import WEIGHTS, assert_outputs_close, compile_families, padded_batch

FAMILIES = compile_families()


@pytest.mark.parametrize("name", FAMILIES)
def test_one_graph_for_every_length_and_padding(name, fresh_dynamo):
    """fullgraph=True (a graph break would raise), and batches of other sizes, lengths and
    padding sides, one above FEED_FORWARD_BLOCK tokens (where eager cuts the token-wise work
    into blocks), reuse the first graph; outputs equal eager within 1e-5 in float32."""
    model = me.load_model(FAMILIES[name], attention="sdpa")
    compiled = torch.compile(model, fullgraph=True, dynamic=True, backend="aot_eager")
    batches = [padded_batch(3, 11, seed=0), padded_batch(5, 19, seed=1, left=True, empty_row=True),
               padded_batch(3, 400, seed=2)]
    with torch.inference_mode():
        for ids, mask in batches:
            assert_outputs_close(compiled(ids, mask), model(ids, mask))
    assert counters["stats"]["unique_graphs"] == 1
    assert not counters["graph_break"]
    assert not counters["recompiles"]


def test_inductor_equals_eager(fresh_dynamo):
    model = me.load_model(WEIGHTS / "mosaic-tiny", attention="sdpa")
    compiled = torch.compile(model, fullgraph=True, dynamic=True)
    with torch.inference_mode():
        for ids, mask in (padded_batch(2, 9, seed=2), padded_batch(3, 6, seed=3, left=True)):
            assert_outputs_close(compiled(ids, mask), model(ids, mask))
    assert counters["stats"]["unique_graphs"] == 1


def test_compiled_training_step_matches_eager(fresh_dynamo):
    """Gradients through the padded rows equal those through the packed tokens (dynamo's own
    backend: the traced forward under eager autograd)."""
    ids, mask = padded_batch(2, 10, seed=4, left=True)
    grads = []
    for compile_it in (False, True):
        model = me.load_model(WEIGHTS / "mosaic-tiny", attention="sdpa")
        forward = torch.compile(model, fullgraph=True, dynamic=True, backend="eager") \
            if compile_it else model
        forward(ids, mask).last_hidden_state.square().sum().backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    # Float32 rounding of a sum over tokens scales with the tensor's largest entry.
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, rtol=1e-4,
                                   atol=2e-6 * grad.abs().max().item(), msg=name)


def test_triton_attention_stays_a_kernel_call_when_compiled(fresh_dynamo):
    """With attention='triton' the compiled graph calls the kernel's custom operator."""
    graphs = []

    def backend(graph_module, example_inputs):
        graphs.append(str(graph_module.graph))
        return graph_module.forward

    model = me.load_model(WEIGHTS / "mosaic-tiny", attention="triton")
    compiled = torch.compile(model, fullgraph=True, dynamic=True, backend=backend)
    ids, mask = padded_batch(2, 6, seed=5, empty_row=True)
    with torch.inference_mode():
        assert_outputs_close(compiled(ids, mask), model(ids, mask))
    assert len(graphs) == 1
    assert graphs[0].count("mosaic_kernels.flash_attn_varlen_alibi") == \
        model.config.num_hidden_layers
