"""Loading checkpoints in the published layouts, strictly.

:meth:`CheckpointDir.open <mosaic_encoder.checkpoint.CheckpointDir.open>` reads the directory (the
tensor index, the layout, ``config.json``); this module checks that the config and the weights
agree, then builds the model on the meta device and assigns the file's tensors to it, so loading
allocates each weight once, in the requested dtype, and never builds an attention bias. Classic
BERT checkpoints store ``attention.self.query/key/value`` separately; they are fused into the
packed ``Wqkv`` projection (:func:`~mosaic_encoder.checkpoint.fuse_qkv`), so the same attention
code and kernels run.

Every weight is checked on the way in: a NaN or infinity in the file, or a value the requested
dtype cannot hold (a bfloat16 weight of 1e5 cast to float16), is an error naming the tensor,
never a model that silently outputs NaN.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .api_arguments import flag_arg
from .checkpoint import (FLOAT_DTYPES, REPORT_LIMIT, TIED_DECODER, TIED_SOURCE, CheckpointDir,
                         Layout, TensorInfo, build_model, check_family, check_geometry,
                         expected_tensors, fuse_qkv, iter_tensors, mismatch_report, stored_state,
                         summarise)
from .devices import resolve_device
from .dtypes import resolve_dtype, warn_if_slow
from .errors import CheckpointError
from .files import printable


def resolve_load_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """A compute dtype (see :data:`mosaic_encoder.dtypes.DTYPES`), or float64 for reference runs."""
    if dtype in (torch.float64, "float64"):
        return torch.float64
    return resolve_dtype(dtype)


def load_model(path: str | Path | CheckpointDir, dtype: str | torch.dtype = torch.float32,
               device: torch.device | str = "cpu", attention: str = "auto",
               attention_window: bool = True, revision: str | None = None) -> nn.Module:
    """Load a checkpoint directory into a model in eval mode.

    Args:
        path: checkpoint directory (``config.json`` and ``model.safetensors`` or a sharded
            index, at its root or where its ``modules.json`` places the transformer; a Hugging
            Face cache snapshot too), a Hugging Face Hub id ``"org/name"`` (from the local cache,
            or downloaded into it: :mod:`mosaic_encoder.hub`), or a directory already opened
            with :meth:`CheckpointDir.open`.
        dtype: float32, bfloat16, float16 (or float64), as a ``torch.dtype`` or its name (fp32,
            bf16 and fp16 too); stored tensors are cast to it.
        device: where the parameters live: cpu, cuda[:N] or mps (see
            :func:`mosaic_encoder.devices.resolve_device`).
        attention: ``"auto"``, ``"sdpa"`` or ``"triton"`` (see :mod:`mosaic_encoder.attention`).
        attention_window: the config's ``attention_window`` (exact ALiBi windowing; False
            computes every score).
        revision: with a Hub id, the branch, tag or commit to load (default: main).
    Returns:
        :class:`MosaicBertModel` or :class:`MosaicBertForMaskedLM`, whose ``forward(input_ids,
        attention_mask=None, token_type_ids=None)`` returns an :class:`EncoderOutput`.
    Raises:
        CheckpointError, ConfigError: with one sentence naming the file, tensor or argument at
        fault.
    """
    attention_window = flag_arg(attention_window, "attention_window")
    dtype = resolve_load_dtype(dtype)
    device = resolve_device(device)
    warn_if_slow(dtype, device)
    checkpoint = CheckpointDir.open(path, revision)
    found, layout = checkpoint.tensors, checkpoint.layout
    directory = printable(checkpoint.transformer_dir)  # for messages: it may come from a file
    config = checkpoint.config(attention_impl=attention, attention_window=attention_window)
    check_family(config, set(found), layout, directory)
    check_geometry(config, found, layout, directory)
    with torch.device("meta"):
        # In the requested dtype, but for what a module keeps in float32 (learned ALiBi slopes).
        model = build_model(config, layout).to(dtype)
    problems = mismatch_report(expected_tensors(model, layout), found, layout.optional)
    if problems:
        raise CheckpointError(f"checkpoint {directory} does not match the model its config.json "
                              f"describes: {summarise(problems, REPORT_LIMIT)}.")
    dtypes = {name: tensor.dtype for name, tensor in stored_state(model, layout).items()}
    state = _read_tensors(found, layout, dtypes, device)
    if layout.masked_lm:
        source = state[TIED_SOURCE]
        stored = state.get(TIED_DECODER)
        if stored is not None and not torch.equal(stored, source):
            raise CheckpointError(f"checkpoint {directory} stores {TIED_DECODER} different from "
                                  f"{TIED_SOURCE}, but the two are tied in this architecture.")
        state[TIED_DECODER] = source
    model.load_state_dict(state, strict=True, assign=True)
    if layout.masked_lm:
        model.tie_weights()
    return model.eval()


def _read_tensors(found: dict[str, TensorInfo], layout: Layout, dtypes: dict[str, torch.dtype],
                  device: torch.device) -> dict[str, torch.Tensor]:
    """The stored tensors under the model's names, each cast to its parameter's dtype."""
    prefix = "" if layout.masked_lm else layout.prefix
    for name, info in found.items():
        if info.dtype not in FLOAT_DTYPES:
            raise CheckpointError(f"tensor {name} in {printable(info.file)} has dtype "
                                  f"{info.dtype}; floating point weights were expected.")
    state = {}
    for name, stored in iter_tensors(found):
        file = printable(found[name].file)
        state[name.removeprefix(prefix)] = _checked_cast(name, file, stored, dtypes[name], device)
    return state if layout.fused_qkv else fuse_qkv(state)


def _checked_cast(name: str, file: str, stored: torch.Tensor, dtype: torch.dtype,
                  device: torch.device) -> torch.Tensor:
    """``stored`` in ``dtype`` on ``device``, refusing non-finite values and overflow by the cast."""
    if not bool(torch.isfinite(stored).all()):
        raise CheckpointError(f"tensor {name} in {file} holds NaN or infinite values.")
    cast = stored.to(dtype=dtype)
    if not bool(torch.isfinite(cast).all()):
        largest = float(stored.abs().max())
        raise CheckpointError(f"tensor {name} in {file} overflows {str(dtype).removeprefix('torch.')} "
                              f"(largest |x| {largest:.4g} > {torch.finfo(dtype).max:.4g}); load it "
                              f"in float32 or bfloat16.")
    return cast.to(device=device)
