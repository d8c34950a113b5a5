"""torch.export and ONNX: one graph for every batch size, length and padding, equal to eager."""

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

import mosaic_encoder as me
from helpers import ROOT, WEIGHTS, leftovers
from mosaic_encoder import ConfigError
from mosaic_encoder.export import ExportedEncoder, export_onnx, export_program, load_exportable
from test_compile import FAMILIES, padded_batch

onnxruntime = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

# (batch, seqlen, left padding, an all-padding row), none of them the export's (2, 8) example.
UNSEEN = [(1, 1, False, False), (3, 17, False, True), (4, 5, True, False), (5, 33, True, True),
          (2, 300, False, False)]


def example_batch():
    from mosaic_encoder.export import example_inputs

    return example_inputs(token_types=False)


@pytest.mark.parametrize("name", ["mosaic-tiny-mlm", "all-MiniLM-L6-v2"])
def test_exported_program_equals_eager_on_other_shapes(name):
    """Dynamic batch and sequence: three shapes and masks the export never saw."""
    model = me.load_model(FAMILIES[name], attention="sdpa")
    program = export_program(model).module()
    with torch.inference_mode():
        for batch, seqlen, left, empty in UNSEEN[1:4]:
            ids, mask = padded_batch(batch, seqlen, seed=seqlen, left=left, empty_row=empty)
            ours, reference = program(ids, mask), model(ids, mask)
            torch.testing.assert_close(ours.last_hidden_state, reference.last_hidden_state,
                                       rtol=0, atol=1e-5)
            if reference.logits is not None:
                torch.testing.assert_close(ours.logits, reference.logits, rtol=0, atol=1e-5)


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    """The bundled sentence-transformers checkpoint exported once, with its eager twin and every
    warning the export raised (each shown, none deduplicated)."""
    path = tmp_path_factory.mktemp("onnx") / "mosaic-tiny.onnx"
    with warnings.catch_warnings(record=True) as raised:
        warnings.simplefilter("always")
        result = export_onnx(WEIGHTS / "mosaic-tiny", path)
    return result, load_exportable(WEIGHTS / "mosaic-tiny"), raised


def test_the_export_passes_on_no_warning_of_torchs_own(tiny_onnx):
    """torch's exporter deep-copies its tree specs, which trips its own LeafSpec deprecation
    (torch 2.13); nothing a caller can change, so nothing a user should read."""
    assert [f"{w.category.__name__}: {w.message}" for w in tiny_onnx[2]] == []


def run_both(result, eager, ids, mask):
    session = onnxruntime.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    feeds = {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}
    if "token_type_ids" in result.inputs:
        feeds["token_type_ids"] = np.zeros_like(feeds["input_ids"])
    with torch.inference_mode():
        reference = [t.numpy() for t in eager(ids, mask)]
    return session.run(list(result.outputs), feeds), reference


def test_onnx_equals_eager_on_traced_and_unseen_batches(tiny_onnx):
    """The traced example and five unseen shapes (all-padding rows, left padding, one token)."""
    result, eager, _ = tiny_onnx
    assert result.inputs == ("input_ids", "attention_mask", "token_type_ids")
    assert result.outputs == ("last_hidden_state", "sentence_embedding")
    batches = [example_batch()] + [padded_batch(b, s, seed=s, left=left, empty_row=empty)
                                   for b, s, left, empty in UNSEEN]
    for ids, mask in batches:
        ours, reference = run_both(result, eager, ids, mask)
        for got, expected in zip(ours, reference):
            assert got.shape == expected.shape
            np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)
        norms = np.linalg.norm(ours[1], axis=1)
        np.testing.assert_allclose(norms[mask.sum(1).numpy() > 0], 1, atol=1e-5)


def test_onnx_sentence_embedding_is_the_encoders(tiny_onnx, texts):
    """The pooled output is what SentenceEncoder.encode returns for the same tokens."""
    result, eager, _ = tiny_onnx
    encoder = me.SentenceEncoder(WEIGHTS / "mosaic-tiny", attention="sdpa")
    ids, types, _ = encoder.tokenizer.encode_ids(texts[:4])
    from mosaic_encoder.tokenizer import collate

    tokens = collate(ids, types, encoder.tokenizer.pad_token_id)
    ours, _ = run_both(result, eager, tokens.input_ids, tokens.attention_mask)
    np.testing.assert_allclose(ours[1], encoder.encode(texts[:4]), rtol=0, atol=1e-5)


def test_classic_bert_exports_without_token_types(tmp_path):
    path = tmp_path / "minilm.onnx"
    result = export_onnx(FAMILIES["all-MiniLM-L6-v2"], path, token_types=False)
    assert result.inputs == ("input_ids", "attention_mask")
    eager = load_exportable(FAMILIES["all-MiniLM-L6-v2"])
    for batch, seqlen, left, empty in UNSEEN[:3]:
        ours, reference = run_both(result, eager, *padded_batch(batch, seqlen, seed=batch,
                                                                left=left, empty_row=empty))
        for got, expected in zip(ours, reference):
            np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)


def test_triton_attention_is_refused_and_nothing_written(tmp_path):
    path = tmp_path / "model.onnx"
    with pytest.raises(ConfigError, match="export with attention 'sdpa'"):
        export_onnx(WEIGHTS / "mosaic-tiny", path, attention="triton")
    assert not path.exists() and not leftovers(tmp_path)


def test_cli_refuses_triton_on_cpu_in_one_line(tmp_path):
    """Without the interpreter, as a user on a CPU machine runs it."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    path = tmp_path / "model.onnx"
    done = subprocess.run([sys.executable, "-m", "mosaic_encoder", "export-onnx", str(path),
                           "--attention", "triton"], capture_output=True, text=True, env=env,
                          cwd=ROOT)
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("error: attention 'triton' cannot be exported to ONNX")
    assert done.stderr.count("\n") == 1 and not done.stdout
    assert list(tmp_path.iterdir()) == []


def test_torch_export_of_triton_model_on_cpu_names_sdpa(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET")
    model = me.load_model(WEIGHTS / "mosaic-tiny", attention="triton")
    with pytest.raises(ConfigError, match="attention='sdpa'"):
        export_program(ExportedEncoder(model))


def test_existing_output_needs_overwrite(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"keep")
    with pytest.raises(me.InputError, match="--force"):
        export_onnx(WEIGHTS / "mosaic-tiny", path)
    assert path.read_bytes() == b"keep"


def test_torchscript_tracing_is_refused_rather_than_baking_the_padding():
    """The legacy tracer (torch.onnx.export(dynamo=False)) would freeze the example's mask."""
    model = me.load_model(WEIGHTS / "mosaic-tiny", attention="sdpa")
    with pytest.raises(ConfigError, match="dynamo=True"):
        torch.jit.trace(lambda ids, mask: model(ids, mask).last_hidden_state, example_batch())
