"""Regional compilation (mosaic_encoder.regions): eager's numbers, one compilation for every
batch size, length and padding, and compiled regions only where they pay.

Most tests compile through ``aot_eager`` (dynamo and AOTAutograd decide graph breaks, guards and
recompilations, at a fraction of inductor's compile time); one runs inductor with its freezing,
as ``SentenceEncoder(compile=True)`` does on the CPU. No test asserts a timing: the verdicts are
driven by a backend made slow on purpose, or by hand-set trial times.
"""

import time

import pytest
import torch
from torch._dynamo.utils import counters

import mosaic_encoder as me
from helpers import WEIGHTS, assert_outputs_close, compile_families, padded_batch
from mosaic_encoder.layers import FEED_FORWARD_BLOCK
from mosaic_encoder.regions import CALIBRATION_FORWARDS, CompiledRegions, CompileWarning

FAMILIES = compile_families()


def graphs() -> int:
    return counters["stats"]["unique_graphs"]


@pytest.mark.parametrize("name", FAMILIES)
def test_regions_equal_eager_with_one_graph_per_region(name, fresh_dynamo):
    """Every batch size, length and padding side (an empty row and a one-token batch too)
    reuses the two region graphs of the first batch; outputs equal eager within 1e-5."""
    model = me.load_model(FAMILIES[name], attention="sdpa")
    regions = CompiledRegions(model, backend="aot_eager")
    batches = [padded_batch(3, 11, seed=0), padded_batch(5, 19, seed=1, left=True, empty_row=True),
               padded_batch(1, 1, seed=2), padded_batch(2, 40, seed=3)]
    with torch.inference_mode():
        for ids, mask in batches:
            for _ in range(1 + CALIBRATION_FORWARDS):  # whichever path each region takes
                assert_outputs_close(regions(ids, mask), model(ids, mask))
    assert graphs() == 2
    assert not counters["graph_break"]
    assert not counters["recompiles"]


def test_inductor_freezes_one_graph_per_layer_and_region(fresh_dynamo):
    """Inductor on the CPU: weights frozen into each layer's graphs, kernels shared; no graph
    after the first batch; eager's numbers."""
    model = me.load_model(WEIGHTS / "mosaic-tiny", attention="sdpa")
    regions = CompiledRegions(model)
    assert regions.freeze
    with torch.inference_mode():
        for ids, mask in (padded_batch(2, 24, seed=4), padded_batch(3, 9, seed=5, left=True)):
            for _ in range(1 + CALIBRATION_FORWARDS):
                assert_outputs_close(regions(ids, mask), model(ids, mask))
            assert graphs() == 2 * model.config.num_hidden_layers


def test_long_batches_run_the_token_wise_regions_in_blocks(fresh_dynamo):
    """Above FEED_FORWARD_BLOCK tokens the work after attention runs in equal blocks through the
    same graph: no recompilation for the block size."""
    model = me.load_model(WEIGHTS / "mosaic-tiny", attention="sdpa")
    regions = CompiledRegions(model, backend="aot_eager")
    with torch.inference_mode():
        for ids, mask in (padded_batch(1, 40, seed=6), padded_batch(1, FEED_FORWARD_BLOCK + 77,
                                                                       seed=7)):
            assert_outputs_close(regions(ids, mask), model(ids, mask))
    assert graphs() == 2 and not counters["recompiles"]


def test_forwards_with_gradients_run_eagerly(fresh_dynamo):
    """Freezing is an inference transform: with gradients enabled nothing compiles, and the
    gradients are eager's."""
    model = me.load_model(WEIGHTS / "mosaic-tiny", attention="sdpa")
    regions = CompiledRegions(model, backend="aot_eager")
    ids, mask = padded_batch(2, 8, seed=8)
    regions(ids, mask).last_hidden_state.sum().backward()
    assert graphs() == 0
    assert all(p.grad is not None for p in model.encoder.parameters())


def slow_backend(calls: list[int]):
    """A torch.compile backend whose graphs run eagerly after 50 ms asleep: compiling loses."""
    def compile_graph(graph_module, example_inputs):
        def run(*args):
            calls.append(1)
            time.sleep(0.05)
            return graph_module(*args)
        return run
    return compile_graph


def test_a_region_that_does_not_pay_runs_eagerly_and_is_reported_once(fresh_dynamo):
    """Timed both ways on the first forwards at a size, a region slower compiled runs eagerly
    at that size from then on; one CompileWarning, with the ratio, however many verdicts."""
    calls = []
    model = me.load_model(WEIGHTS / "mosaic-tiny", attention="sdpa")
    regions = CompiledRegions(model, backend=slow_backend(calls))
    ids, mask = padded_batch(2, 12, seed=9)
    with torch.inference_mode(), pytest.warns(CompileWarning) as caught:
        for _ in range(1 + CALIBRATION_FORWARDS):
            regions(ids, mask)
        decided = len(calls)
        assert_outputs_close(regions(ids, mask), model(ids, mask))
        assert len(calls) == decided  # eager at this size now
        other = padded_batch(4, 60, seed=10)  # another size: timed again, decided alike
        for _ in range(1 + CALIBRATION_FORWARDS):
            regions(*other)
    assert {trial.pays for trial in regions.trials.values()} == {False}
    assert len(regions.trials) == 4  # two regions at two sizes
    assert len(caught) == 1
    assert "eager on this machine, so it runs eagerly" in str(caught[0].message)
    assert "x eager" in str(caught[0].message)


def test_a_region_that_pays_stays_compiled():
    """The verdict compares the summed times of a size's trial once it has both; compiled must
    beat eager by PAYING_MARGIN."""
    model = me.load_model(WEIGHTS / "mosaic-tiny", attention="sdpa")
    regions = CompiledRegions(model, backend="aot_eager")
    for size, (compiled, eager) in {5: (1.0, 2.0), 6: (2.0, 1.0), 7: (1.0, 0.0),
                                    8: (1.0, 1.02)}.items():
        trial = regions.trials["after", size]
        trial.compiled_s, trial.eager_s, trial.forwards = compiled, eager, CALIBRATION_FORWARDS - 1
        regions.timed.add(("after", size))
    with pytest.warns(CompileWarning, match="at 32 to 63 tokens: compiled, it ran at 0.50x"):
        regions.close_trials()
    # Within PAYING_MARGIN of eager is a tie, and a tie goes to eager.
    assert [regions.trials["after", size].pays for size in (5, 6, 7, 8)] == \
        [True, False, None, False]
