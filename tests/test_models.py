"""Golden equivalence with upstream's outputs, dtype behaviour, padding invariance, geometry."""


import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import mosaic_encoder as me
from helpers import CASES, CHECKPOINTS, WEIGHTS
from mosaic_encoder.baseline import UpstreamStyleEncoder
from mosaic_encoder.checkpoint import Layout, build_model, expected_tensors
from mosaic_encoder.manifest import load_manifest

TOLERANCE = 1e-4  # reference/README: float32 on CPU


@pytest.fixture(scope="module")
def models():
    cache = {}

    def get(name, dtype=torch.float32, attention="sdpa"):
        key = (name, dtype, attention)
        if key not in cache:
            cache[key] = me.load_model(WEIGHTS / name, dtype=dtype, attention=attention)
        return cache[key]

    return get


def run(model, batch, case):
    with torch.inference_mode():
        return model(batch[f"{case}.input_ids"], batch[f"{case}.attention_mask"])


def logits_at(output, batch, case):
    rows, cols = batch[f"{case}.logit_positions"].unbind(1)
    return output.logits[rows, cols]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("name", CHECKPOINTS)
def test_float32_matches_upstream(models, expected, name, case):
    batch = expected(name)
    output = run(models(name), batch, case)
    mask = batch[f"{case}.attention_mask"].bool()
    torch.testing.assert_close(output.last_hidden_state, batch[f"{case}.last_hidden_state"],
                               rtol=0, atol=TOLERANCE)
    assert torch.all(output.last_hidden_state[~mask] == 0)
    if name == "mosaic-tiny":
        torch.testing.assert_close(output.pooler_output, batch[f"{case}.pooler_output"],
                                   rtol=0, atol=TOLERANCE)
        assert output.logits is None
    else:
        assert output.pooler_output is None
        assert output.logits.shape == (*mask.shape, 30528)
        torch.testing.assert_close(logits_at(output, batch, case),
                                   batch[f"{case}.logits_at_positions"], rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize("case", ["texts", "random0"])
@pytest.mark.parametrize("name", CHECKPOINTS)
def test_triton_attention_matches_upstream(models, expected, name, case):
    """The whole model with the Triton kernel (the interpreter on CPU) meets the same tolerance."""
    batch = expected(name)
    output = run(models(name, attention="triton"), batch, case)
    torch.testing.assert_close(output.last_hidden_state, batch[f"{case}.last_hidden_state"],
                               rtol=0, atol=TOLERANCE)
    if output.logits is not None:
        torch.testing.assert_close(logits_at(output, batch, case),
                                   batch[f"{case}.logits_at_positions"], rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", CHECKPOINTS)
def test_low_precision_within_twice_plain_pytorch_error(models, expected, name, dtype):
    """Error vs the float32 reference is at most 2x that of the dense upstream-style computation
    run in the same dtype on the same weights (reference/README's rule)."""
    batch = expected(name)
    model = models(name, dtype)
    encoder = model.bert if hasattr(model, "bert") else model
    plain = UpstreamStyleEncoder(encoder)
    for case in CASES:
        ids, mask = batch[f"{case}.input_ids"], batch[f"{case}.attention_mask"]
        reference = batch[f"{case}.last_hidden_state"]
        ours = run(model, batch, case).last_hidden_state
        assert ours.dtype == dtype
        ours_error = (ours.float() - reference).abs().max()
        plain_error = (plain(ids, mask).float() - reference).abs().max()
        assert ours_error <= 2 * plain_error, (case, ours_error, plain_error)


def random_padded_batch(lengths, extra, seed):
    """(B, max(lengths) + extra) random token ids and the mask of rows of ``lengths`` tokens."""
    generator = torch.Generator().manual_seed(seed)
    seqlen = max(lengths) + extra
    ids = torch.randint(1, 30522, (len(lengths), seqlen), generator=generator)
    return ids, (torch.arange(seqlen)[None] < torch.tensor(lengths)[:, None]).long()


@given(lengths=st.lists(st.integers(1, 40), min_size=1, max_size=4), extra=st.integers(0, 7),
       seed=st.integers(0, 2 ** 16))
def test_padding_invariance(models, lengths, extra, seed):
    """A sequence's outputs do not depend on its batch neighbours or the padded length."""
    model = models("mosaic-tiny")
    ids, mask = random_padded_batch(lengths, extra, seed)
    with torch.inference_mode():
        batched = model(ids, mask)
        for row, length in enumerate(lengths):
            alone = model(ids[row:row + 1, :length])
            torch.testing.assert_close(batched.last_hidden_state[row, :length],
                                       alone.last_hidden_state[0], rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(batched.pooler_output[row], alone.pooler_output[0],
                                       rtol=1e-5, atol=1e-5)


def test_bfloat16_does_not_crash_and_token_type_defaults(models):
    model = models("mosaic-tiny", torch.bfloat16)
    ids = torch.tensor([[101, 2023, 102]])
    with torch.inference_mode():
        default = model(ids).last_hidden_state
        explicit = model(ids, torch.ones_like(ids), torch.zeros_like(ids)).last_hidden_state
    assert torch.equal(default, explicit) and torch.isfinite(default.float()).all()


def test_sequence_longer_than_alibi_starting_size(models):
    """alibi_starting_size is 32 in the tiny config; nothing caps the length. 1300 tokens also
    exercise the blocked feed-forward (FEED_FORWARD_BLOCK tokens per step)."""
    from mosaic_encoder.layers import FEED_FORWARD_BLOCK
    model = models("mosaic-tiny")
    ids = torch.randint(1, 30522, (1, 1300), generator=torch.Generator().manual_seed(0))
    assert ids.shape[1] > FEED_FORWARD_BLOCK
    dense = UpstreamStyleEncoder(model, alibi_starting_size=32)
    with torch.inference_mode():
        torch.testing.assert_close(model(ids).last_hidden_state, dense(ids), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("ids,mask,match", [
    (torch.ones(3, dtype=torch.long), None, "shape"),
    (torch.ones(1, 3), None, "input_ids must be an int64 or int32"),
    (torch.ones(1, 3, dtype=torch.uint8), None, "input_ids must be an int64 or int32"),
    (torch.ones(1, 3, dtype=torch.long), torch.tensor([[1.0, 0.5, 0.0]]), "found 0.5"),
    (torch.ones(1, 3, dtype=torch.long), torch.tensor([[1.7, 1.0, 0.0]]), "found 1.7"),
    (torch.ones(1, 3, dtype=torch.long), [[1, 1, 1]], "attention_mask must be a torch.Tensor"),
    (torch.tensor([[1, 40000]]), None, r"\[0, 30528\)"),
    (torch.ones(1, 3, dtype=torch.long), torch.ones(1, 4, dtype=torch.long), "attention_mask"),
])
def test_bad_inputs_are_clear_errors(models, ids, mask, match):
    with pytest.raises(me.InputError, match=match):
        models("mosaic-tiny")(ids, mask)


def test_float_token_type_ids_are_refused(models):
    ids = torch.ones(1, 3, dtype=torch.long)
    with pytest.raises(me.InputError, match="token_type_ids must be an int64 or int32"):
        models("mosaic-tiny")(ids, None, torch.zeros(1, 3))


def test_int32_ids_and_bool_or_float_masks_are_accepted(models):
    model = models("mosaic-tiny")
    ids = torch.tensor([[101, 2023, 102, 0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    with torch.inference_mode():
        reference = model(ids, mask).last_hidden_state
        for other_ids, other_mask in ((ids.int(), mask), (ids, mask.bool()), (ids, mask.float())):
            assert torch.equal(model(other_ids, other_mask).last_hidden_state, reference)


@pytest.mark.parametrize("name", CHECKPOINTS)
@pytest.mark.parametrize("attention", ["sdpa", "triton"])
@pytest.mark.parametrize("shape", [(0, 5), (0, 0), (3, 0)])
def test_batches_without_tokens_give_empty_or_zero_outputs(models, name, attention, shape):
    model = models(name, attention=attention)
    ids = torch.zeros(shape, dtype=torch.long)
    with torch.inference_mode():
        out = model(ids, torch.zeros_like(ids))
    hidden = model.config.hidden_size
    assert out.last_hidden_state.shape == (*shape, hidden)
    if name == "mosaic-tiny":
        assert out.pooler_output.shape == (shape[0], hidden)
    else:
        assert out.logits.shape == (*shape, model.config.vocab_size)
        assert not out.logits.any()
    assert not out.last_hidden_state.any()


@settings(max_examples=15)
@given(lengths=st.lists(st.integers(0, 12), min_size=1, max_size=5), extra=st.integers(0, 4),
       seed=st.integers(0, 2 ** 16))
def test_padding_invariance_with_empty_rows(models, lengths, extra, seed):
    """Rows without real tokens (all-zero masks) give zeros and leave the other rows unchanged."""
    model = models("mosaic-tiny")
    ids, mask = random_padded_batch(lengths, extra, seed)
    with torch.inference_mode():
        batched = model(ids, mask).last_hidden_state
        for row, length in enumerate(lengths):
            if length == 0:
                assert not batched[row].any()
                continue
            alone = model(ids[row:row + 1, :length]).last_hidden_state
            torch.testing.assert_close(batched[row, :length], alone[0], rtol=1e-5, atol=1e-5)


def test_eval_outputs_ignore_dropout_config(models, expected):
    """The MLM config has attention_probs_dropout_prob 0.1; eval mode must not apply it."""
    model = models("mosaic-tiny-mlm")
    assert not model.training
    batch = expected("mosaic-tiny-mlm")
    first, second = run(model, batch, "texts"), run(model, batch, "texts")
    assert torch.equal(first.logits, second.logits)


@pytest.mark.parametrize("manifest_name,layout", [
    ("lodestone-base-4096-v1", Layout(masked_lm=False, prefix="", pooler=True)),
    ("mosaic-bert-base-seqlen-2048", Layout(masked_lm=True, prefix="bert.", pooler=False)),
])
def test_published_geometry_has_exact_tensor_names_and_shapes(manifest_name, layout):
    manifest = load_manifest(manifest_name)
    config = me.MosaicConfig.from_dict(manifest["config"])
    with torch.device("meta"):
        model = build_model(config, layout)
    expected = {name: tuple(info["shape"]) for name, info in manifest["tensors"].items()}
    assert expected_tensors(model, layout) == expected
    unique = sum(p.numel() for p in model.parameters())
    assert unique == manifest["num_parameters_unique"]


def test_triton_attention_trains_like_sdpa():
    """Gradients through the whole model agree between the kernel (with its backward) and the
    plain path, so the model can be fine-tuned with the kernel."""
    ids = torch.randint(1000, 30000, (2, 24), generator=torch.Generator().manual_seed(3))
    mask = torch.ones_like(ids)
    mask[1, 17:] = 0
    grads = {}
    for attention in ("sdpa", "triton"):
        model = me.load_model(WEIGHTS / "mosaic-tiny", attention=attention)
        weight = torch.linspace(-1, 1, 192)
        (model(ids, mask).last_hidden_state * weight).sum().backward()
        grads[attention] = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert grads["sdpa"].keys() == grads["triton"].keys()
    # A gradient entry is a sum over tokens whose float32 rounding scales with the summands, not
    # with the (possibly cancelled) sum: the absolute tolerance follows the tensor's largest entry.
    for name, grad in grads["sdpa"].items():
        torch.testing.assert_close(grads["triton"][name], grad, rtol=1e-4,
                                   atol=2e-6 * grad.abs().max().item(), msg=name)
