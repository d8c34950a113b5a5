"""Exporting an encoder: ``torch.export`` programs and ONNX files, with dynamic batch and length.

Both trace the model's padded-rows forward (see :mod:`mosaic_encoder.models`), whose shapes
follow from the input's, so one exported graph serves every batch size, sequence length and
padding pattern. The exported graph (:class:`ExportedEncoder`) takes ``input_ids``,
``attention_mask`` and, optionally, ``token_type_ids``, all (batch, sequence) int64, and returns
``last_hidden_state`` (batch, sequence, hidden) float32, zeros at padding, and, for
sentence-transformers checkpoints, ``sentence_embedding`` (batch, dim) float32: the checkpoint's
pooling, L2-normalised.

Only the ``"sdpa"`` attention exports to ONNX: the Triton kernel is a custom operator that ONNX
has no counterpart for. ONNX support needs the ``onnx`` and ``onnxscript`` packages (the
``export`` extra); neither is imported before an export is asked for.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .atomic import atomic_path
from .checkpoint import CheckpointDir
from .errors import ConfigError, InputError
from .loading import load_model
from .logs import quieted
from .models import MosaicBertModel, unwrap_encoder
from .pooling import Pooling

# The exported graph's names, as Hugging Face's ONNX exports name them.
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
HIDDEN_OUTPUT, SENTENCE_OUTPUT = "last_hidden_state", "sentence_embedding"


class ExportedEncoder(nn.Module):
    """The graph an export traces: the encoder and, when ``pooling`` is given, the pooled
    L2-normalised embedding.

    Args:
        model: the encoder (a masked-LM model's ``bert`` is used without its head).
        pooling: the sentence-transformers pooling, or None for the hidden states only.
    """

    def __init__(self, model: nn.Module, pooling: Pooling | None = None):
        super().__init__()
        self.encoder: MosaicBertModel = unwrap_encoder(model)
        self.pooling = pooling

    @property
    def output_names(self) -> tuple[str, ...]:
        return (HIDDEN_OUTPUT,) if self.pooling is None else (HIDDEN_OUTPUT, SENTENCE_OUTPUT)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """(B, S) int64 inputs -> ``last_hidden_state`` (B, S, H) [, ``sentence_embedding``]."""
        hidden = self.encoder(input_ids, attention_mask, token_type_ids).last_hidden_state
        if self.pooling is None:
            return (hidden,)
        pooled = self.pooling(hidden.float(), attention_mask)
        return hidden, nn.functional.normalize(pooled, p=2, dim=-1)


def load_exportable(path: str | Path, attention: str = "sdpa") -> ExportedEncoder:
    """The checkpoint at ``path`` as an :class:`ExportedEncoder` in float32 on the CPU.

    A sentence-transformers directory (with ``modules.json``) gets its pooling as a second
    output; any other checkpoint exports its hidden states only.
    """
    checkpoint = CheckpointDir.open(path)
    model = load_model(checkpoint, attention=attention)
    sentence = (checkpoint.path / "modules.json").is_file()
    return ExportedEncoder(model, checkpoint.pipeline.pooling if sentence else None).eval()


def example_inputs(token_types: bool = True) -> tuple[torch.Tensor, ...]:
    """A small (2, 8) batch whose second row is padded: the example an export traces with.

    Neither size is 0 or 1, which ``torch.export`` would specialise on.
    """
    input_ids = torch.tensor([[101, 7, 8, 9, 10, 11, 12, 102], [101, 13, 14, 102, 0, 0, 0, 0]])
    attention_mask = (input_ids != 0).to(torch.int64)
    return (input_ids, attention_mask, torch.zeros_like(input_ids)) if token_types else \
        (input_ids, attention_mask)


def dynamic_shapes(model: nn.Module, count: int) -> tuple[dict[int, torch.export.Dim], ...]:
    """Batch and sequence dynamic, shared by ``count`` (B, S) inputs of ``model``; learned
    positions bound the sequence at ``max_position_embeddings`` (the position scheme's
    ``longest_input``)."""
    batch = torch.export.Dim("batch")
    sequence = torch.export.Dim("sequence", max=_encoder(model).config.longest_input)
    return tuple({0: batch, 1: sequence} for _ in range(count))


def export_program(model: nn.Module, inputs: tuple[torch.Tensor, ...] | None = None
                   ) -> torch.export.ExportedProgram:
    """``torch.export`` of ``model`` (an encoder, masked-LM model or :class:`ExportedEncoder`)
    with dynamic batch and sequence; ``inputs`` default to :func:`example_inputs` (ids, mask)."""
    inputs = inputs if inputs is not None else example_inputs(token_types=False)
    _check_attention(model, "torch.export")
    with torch.no_grad():
        return torch.export.export(model, inputs,
                                   dynamic_shapes=dynamic_shapes(model, len(inputs)))


@dataclass(frozen=True)
class OnnxExport:
    """What :func:`export_onnx` wrote: the file, its input and output names."""

    path: Path
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


def export_onnx(model_dir: str | Path, output: str | Path, token_types: bool = True,
                attention: str = "sdpa", overwrite: bool = False) -> OnnxExport:
    """Write the checkpoint at ``model_dir`` as an ONNX file with dynamic batch and sequence.

    Args:
        model_dir: a checkpoint or sentence-transformers directory.
        output: the ``.onnx`` file, written completely or not at all.
        token_types: give the graph a ``token_type_ids`` input (else it uses zeros).
        attention: ``"sdpa"`` (or ``"auto"``, which is sdpa on the CPU); ``"triton"`` is refused.
        overwrite: replace an existing ``output``.
    """
    output = Path(output)
    if output.suffix != ".onnx":
        raise InputError(f"output file {output} must end in .onnx.")
    if output.is_dir():
        raise InputError(f"output path {output} cannot be written (it is a directory).")
    if output.exists() and not overwrite:
        raise InputError(f"output file {output} exists; pass --force to replace it.")
    if not output.parent.is_dir():
        raise InputError(f"output path {output} cannot be written (directory {output.parent} "
                         f"does not exist).")
    if attention not in ("auto", "sdpa"):
        raise ConfigError(f"attention {attention!r} cannot be exported to ONNX (the Triton kernel "
                          f"is a custom operator ONNX has no counterpart for); export with "
                          f"attention 'sdpa', which computes the same outputs.")
    model = load_exportable(model_dir, attention="sdpa")
    inputs = example_inputs(token_types)
    names = INPUT_NAMES[:len(inputs)]
    with quieted("torch.onnx"):  # it lists the operators it skips (torchvision's)
        return _write_onnx(model, inputs, names, output)


def _write_onnx(model: ExportedEncoder, inputs: tuple[torch.Tensor, ...], names: tuple[str, ...],
                output: Path) -> OnnxExport:
    with torch.no_grad(), warnings.catch_warnings():
        # The inputs share their two axes on purpose; the exporter says so for each of them.
        warnings.filterwarnings("ignore", message=".*shares the same shape constraints")
        # torch's exporter deep-copies its tree specs, which trips torch's own deprecation of
        # LeafSpec (torch 2.13): nothing a caller can change.
        warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)",
                                category=FutureWarning)
        program = torch.onnx.export(model, inputs, input_names=list(names),
                                    output_names=list(model.output_names),
                                    dynamic_shapes=dynamic_shapes(model, len(inputs)), dynamo=True,
                                    verbose=False)
        with atomic_path(output) as temporary:
            program.save(temporary, external_data=False)
    return OnnxExport(output, names, model.output_names)


def _encoder(model: nn.Module) -> MosaicBertModel:
    return unwrap_encoder(model.encoder if isinstance(model, ExportedEncoder) else model)


def _check_attention(model: nn.Module, what: str) -> None:
    """Refuse an attention implementation that cannot run where the export traces it."""
    from .attention import resolve_impl

    encoder = _encoder(model)
    try:
        resolve_impl(encoder.config.attention_impl, next(encoder.parameters()).device)
    except ConfigError as err:
        raise ConfigError(f"{what} cannot trace this model: {err} Load it with attention='sdpa' "
                          f"to export it.") from None
