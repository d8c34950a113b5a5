"""Sentence-transformers pooling over the real tokens of each sequence."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import CheckpointError
from .files import json_object, read_json

_MODES = ("cls_token", "max_tokens", "mean_tokens", "mean_sqrt_len_tokens")


@dataclass(frozen=True)
class Pooling:
    """Which poolings to concatenate, in sentence-transformers' order (cls, max, mean, mean_sqrt)."""

    modes: tuple[str, ...] = ("mean_tokens",)

    @classmethod
    def from_json_file(cls, path: str | Path, root: str | Path | None = None) -> Pooling:
        """Read a sentence-transformers ``1_Pooling/config.json`` (inside ``root`` if given)."""
        path = Path(path)
        values = json_object(read_json(path, "pooling config", root), "pooling config", path)
        flags = {k.removeprefix("pooling_mode_"): v for k, v in values.items()
                 if k.startswith("pooling_mode_")}
        odd = [k for k, v in flags.items() if not isinstance(v, bool)]
        if odd:
            raise CheckpointError(f"pooling config {path}: pooling_mode_{odd[0][:40]} must be true "
                                  f"or false.")
        unsupported = [f"pooling_mode_{k}" for k, v in flags.items() if v and k not in _MODES]
        if unsupported:
            raise CheckpointError(f"pooling config {path} asks for unsupported mode(s) "
                                  f"{', '.join(unsupported)[:200]}.")
        modes = tuple(m for m in _MODES if flags.get(m))
        if not modes:
            raise CheckpointError(f"pooling config {path} enables no pooling mode.")
        return cls(modes)

    def __call__(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """hidden: (B, S, H), zeros at padding; attention_mask: (B, S) -> (B, len(modes) * H).

        A row whose mask is all zeros pools to zeros in every mode.
        """
        mask = attention_mask.to(hidden.dtype).unsqueeze(-1)
        counts = mask.sum(dim=1)
        empty = counts == 0
        counts = counts.clamp(min=1e-9)
        pooled = []
        for mode in self.modes:
            if mode == "cls_token":
                pooled.append(hidden[:, 0])
            elif mode == "max_tokens":
                # A row without real tokens pools to zeros, as the other modes give, not -inf.
                maxima = hidden.masked_fill(mask == 0, float("-inf")).amax(dim=1)
                pooled.append(maxima.masked_fill(empty, 0.0))
            elif mode == "mean_tokens":
                pooled.append((hidden * mask).sum(dim=1) / counts)
            else:
                pooled.append((hidden * mask).sum(dim=1) / counts.sqrt())
        return torch.cat(pooled, dim=-1)
