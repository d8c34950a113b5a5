"""Sentence-transformers pooling over the real tokens of each sequence."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import CheckpointError
from .files import json_object, read_json, short

_MODES = ("cls_token", "max_tokens", "mean_tokens", "mean_sqrt_len_tokens")
# sentence-transformers 6 names a mode in one ``pooling_mode`` key (a name or a list of names).
_MODE_NAMES = {"cls": "cls_token", "max": "max_tokens", "mean": "mean_tokens",
               "mean_sqrt_len_tokens": "mean_sqrt_len_tokens"}


@dataclass(frozen=True)
class Pooling:
    """Which poolings to concatenate, in order (sentence-transformers' legacy order is cls, max,
    mean, mean_sqrt), and whether a prompt's tokens take part (``include_prompt``; pooling that
    leaves them out needs the prompt's length, which only sentence-transformers' own ``encode``
    passes: :meth:`SentenceEncoder.encode` refuses a prompt then)."""

    modes: tuple[str, ...] = ("mean_tokens",)
    include_prompt: bool = True

    @classmethod
    def from_json_file(cls, path: str | Path, root: str | Path | None = None) -> Pooling:
        """Read a sentence-transformers ``1_Pooling/config.json`` (inside ``root`` if given), in
        either format: ``pooling_mode_*`` flags (before version 6) or one ``pooling_mode`` key."""
        path = Path(path)
        values = json_object(read_json(path, "pooling config", root), "pooling config", path)
        include_prompt = values.get("include_prompt", True)
        if not isinstance(include_prompt, bool):
            raise CheckpointError(f"pooling config {path}: include_prompt must be true or false, "
                                  f"got {short(include_prompt)}.")
        if "pooling_mode" in values:
            return cls(_named_modes(values["pooling_mode"], path), include_prompt)
        flags = {k.removeprefix("pooling_mode_"): v for k, v in values.items()
                 if k.startswith("pooling_mode_")}
        odd = [k for k, v in flags.items() if not isinstance(v, bool)]
        if odd:
            raise CheckpointError(f"pooling config {path}: pooling_mode_{short(odd[0], 40)} "
                                  f"must be true or false.")
        unsupported = [f"pooling_mode_{k}" for k, v in flags.items() if v and k not in _MODES]
        if unsupported:
            raise CheckpointError(f"pooling config {path} asks for unsupported mode(s) "
                                  f"{short(', '.join(unsupported), 200)}.")
        modes = tuple(m for m in _MODES if flags.get(m))
        if not modes:
            raise CheckpointError(f"pooling config {path} enables no pooling mode.")
        return cls(modes, include_prompt)

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


def _named_modes(value: object, path: Path) -> tuple[str, ...]:
    """The modes of a sentence-transformers 6 ``pooling_mode`` value, in its order."""
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise CheckpointError(f"pooling config {path}: pooling_mode must be a mode name or a "
                              f"non-empty list of them, got {short(value)}.")
    unsupported = [name for name in names if name not in _MODE_NAMES]
    if unsupported:
        raise CheckpointError(f"pooling config {path} asks for unsupported mode(s) "
                              f"{short(', '.join(unsupported), 200)} (supported: "
                              f"{', '.join(_MODE_NAMES)}).")
    return tuple(_MODE_NAMES[name] for name in names)
