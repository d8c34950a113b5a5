"""Every design the registries offer, end to end: written and read strictly, equal to the
independent formulas (tests/formulas.py), differentiable, compiled, exported, pretrained one
step and scored beyond the training length.

The designs are every position scheme x every feed-forward, with the norms and their placements
alternating so that each position scheme and each feed-forward meets both of each, plus every
true/false option of a position scheme switched on. They are built from the registries: a new
entry joins every test here without an edit.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch

import formulas
from helpers import ROOT, WEIGHTS
from mosaic_encoder import MosaicConfig, load_model
from mosaic_encoder.cli import main
from mosaic_encoder.config import AXES
from mosaic_encoder.pretraining.initialise import new_masked_lm
from mosaic_encoder.pretraining.model_files import write_directory

TOKENIZER = WEIGHTS / "mosaic-tiny-mlm"
# One layer: tracing (compile, export) costs seconds per layer, and layers repeat.
GEOMETRY = dict(vocab_size=30528, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                intermediate_size=48, max_position_embeddings=64, hidden_dropout_prob=0.0,
                attention_probs_dropout_prob=0.0)
TRAINED_LENGTH, BEYOND = 16, 128


def _designs() -> list[dict]:
    positions, feed_forwards, norms, placements = (list(AXES[field]) for field in AXES)
    designs = [{"position_embedding_type": position, "feed_forward": feed_forward,
                "norm_type": norms[(i + j) % len(norms)],
                "layer_norm_position": placements[(j + i // 2) % len(placements)]}
               for i, position in enumerate(positions) for j, feed_forward in enumerate(feed_forwards)]
    defaults = MosaicConfig(**GEOMETRY)
    for position in positions:
        scheme = defaults.replace(position_embedding_type=position).position_scheme
        designs += [{"position_embedding_type": position, option: True}
                    for option in scheme.options if isinstance(getattr(defaults, option), bool)]
    return designs


DESIGNS = _designs()
IDS = ["-".join(str(v) if not isinstance(v, bool) else k for k, v in design.items())
       for design in DESIGNS]


def test_the_designs_cover_every_entry_with_both_norms_and_placements():
    for field in ("position_embedding_type", "feed_forward"):
        for value in AXES[field]:
            met = [d for d in DESIGNS if d.get(field) == value]
            assert {d.get("norm_type") for d in met} >= set(AXES["norm_type"])
            assert {d.get("layer_norm_position") for d in met} >= set(AXES["layer_norm_position"])


@pytest.fixture(scope="module", params=DESIGNS, ids=IDS)
def checkpoint(request, tmp_path_factory) -> tuple[dict, Path]:
    """A masked-LM checkpoint of the design with informative weights (N(0, 0.5^2), not init's
    0.02, so that positions visibly matter), written as `init` writes one."""
    design = request.param
    config = MosaicConfig.from_dict(dict(GEOMETRY, **design), source="design")
    model = new_masked_lm(config, seed=0)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name != "bert.positions.log_slopes":
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
    directory = tmp_path_factory.mktemp("design") / "model"
    write_directory(directory, model, TOKENIZER)
    return design, directory


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(2)
    ids = torch.randint(999, 30000, (2, 11), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    return ids, mask


def test_written_and_strictly_loaded_model_equals_the_formulas(checkpoint):
    design, directory = checkpoint
    written = json.loads((directory / "config.json").read_text())
    assert {k: written[k] for k in design} == design
    model = load_model(directory, attention="sdpa")
    assert {k: getattr(model.config, k) for k in design} == design
    ids, mask = _batch()
    with torch.inference_mode():
        ours = model.bert(ids, mask).last_hidden_state
    expected = formulas.encoder(model.bert, ids, mask)
    torch.testing.assert_close(ours.double(), expected, rtol=1e-4, atol=1e-4)


def test_every_parameter_gets_a_gradient(checkpoint):
    design, directory = checkpoint
    model = load_model(directory, attention="sdpa").train()
    ids, mask = _batch()
    model(ids, mask).logits.logsumexp(-1).sum().backward()
    parameters = dict(model.named_parameters())
    missing = [name for name, p in parameters.items()
               if p.grad is None or not bool(torch.isfinite(p.grad).all())]
    assert missing == []
    assert ("bert.positions.log_slopes" in parameters) == bool(design.get("alibi_learned_slopes"))


def test_compiled_equals_eager_and_export_runs(checkpoint):
    """One graph (fullgraph=True) per design, whole-model and per region (regional
    compilation), run by dynamo's own backend: what a design can break is the capture (a graph
    break, a data-dependent branch); inductor's code generation is tested on the bundled
    checkpoints (test_compile.py, test_regions.py) and costs a minute per design."""
    from mosaic_encoder.export import export_program
    from mosaic_encoder.regions import CALIBRATION_FORWARDS, CompiledRegions

    design, directory = checkpoint
    encoder = load_model(directory, attention="sdpa").bert
    ids, mask = _batch()
    with torch.inference_mode():
        eager = encoder(ids, mask).last_hidden_state
    torch._dynamo.reset()
    compiled = torch.compile(encoder, fullgraph=True, dynamic=True, backend="eager")
    regions = CompiledRegions(encoder, backend="eager")
    with torch.inference_mode():
        torch.testing.assert_close(compiled(ids, mask).last_hidden_state, eager,
                                   rtol=1e-5, atol=1e-5)
        for _ in range(1 + CALIBRATION_FORWARDS):  # compiled on every layer, then alternating
            torch.testing.assert_close(regions(ids, mask).last_hidden_state, eager,
                                       rtol=1e-5, atol=1e-5)
    program = export_program(encoder, (ids, mask))
    with torch.inference_mode():
        torch.testing.assert_close(program.module()(ids, mask).last_hidden_state, eager,
                                   rtol=1e-5, atol=1e-5)


def test_init_pretrain_and_eval_beyond_the_training_length(checkpoint, tmp_path, capsys):
    """Through the command line: a config file of the design, `init`, one `pretrain` step at
    16 tokens, `eval-mlm` at 16 and 128: scored where the position scheme allows the length, a
    row saying why not where it does not."""
    design, _ = checkpoint
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(dict(GEOMETRY, **design)))
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(f"document {i}: the river flows to the sea and the sea returns "
                                 f"the water as rain over the hills." for i in range(40)))
    assert main(["init", str(tmp_path / "init"), "--config", str(config_file), "--tokenizer",
                 str(TOKENIZER)]) == 0
    assert main(["pretrain", "--model", str(tmp_path / "init"), "--data", str(corpus),
                 "--output", str(tmp_path / "run"), "--steps", "1", "--batch-size", "2",
                 "--max-seq-length", str(TRAINED_LENGTH), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["eval-mlm", "--model", str(tmp_path / "run"), "--data", str(corpus),
                 "--lengths", f"{TRAINED_LENGTH},{BEYOND}", "--tokens", "256", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    longest = MosaicConfig.from_dict(dict(GEOMETRY, **design)).longest_input
    assert rows[0]["loss"] > 0
    if longest is None:
        assert rows[1]["loss"] > 0
    else:
        assert rows[1]["loss"] is None and f"({longest})" in rows[1]["note"]


def test_no_structural_check_compares_variant_names_outside_the_registries():
    """A design question is asked of a registry entry, never answered by comparing a design
    field with a name: `config.feed_forward == "glu"` anywhere in the package would make a new
    entry silently take another's path. Outside config.py (which validates the fields) a design
    field may only index its own registry; comparing it (==, in, match), reading it through
    getattr by name, or indexing anything else with it is refused."""
    fields = set(AXES) | {"attention_impl"}
    registries = {"POSITION_SCHEMES", "FEED_FORWARDS", "NORMS", "PLACEMENTS", "IMPLEMENTATIONS"}

    def is_field(node):
        return isinstance(node, ast.Attribute) and node.attr in fields

    offenders = []
    for path in sorted((ROOT / "mosaic_encoder").rglob("*.py")):
        if path.name == "config.py" and path.parent.name == "mosaic_encoder":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            compared = isinstance(node, (ast.Compare, ast.Match)) and any(
                is_field(part) for part in ast.walk(node))
            by_name = isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and \
                node.func.id == "getattr" and any(
                    isinstance(arg, ast.Constant) and arg.value in fields for arg in node.args)
            indexing = isinstance(node, ast.Subscript) and is_field(node.slice) and not (
                isinstance(node.value, ast.Name) and node.value.id in registries)
            if compared or by_name or indexing:
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []
