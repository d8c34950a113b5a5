"""Record the tensor shapes flowing through a model, block by block, for inspection."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ShapeRecord:
    """One module call: its qualified name and the shapes/dtypes of its first input and output."""

    module: str
    kind: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    dtype: torch.dtype


def trace_shapes(model: nn.Module, *inputs: torch.Tensor,
                 max_depth: int | None = None) -> list[ShapeRecord]:
    """Run ``model(*inputs)`` and return a record per submodule call, in call order.

    ``max_depth`` limits the records to module names with at most that many dots.

    Hooks are removed afterwards, whatever happens.
    """
    records: list[ShapeRecord] = []

    def hook(name):
        def record(module, args, output):
            first = next((a for a in args if isinstance(a, torch.Tensor)), None)
            out = output if isinstance(output, torch.Tensor) else None
            if first is not None and out is not None:
                records.append(ShapeRecord(name, type(module).__name__, tuple(first.shape),
                                           tuple(out.shape), out.dtype))
        return record

    handles = [module.register_forward_hook(hook(name)) for name, module in model.named_modules()
               if name and (max_depth is None or name.count(".") <= max_depth)]
    try:
        with torch.inference_mode():
            model(*inputs)
    finally:
        for handle in handles:
            handle.remove()
    return records
