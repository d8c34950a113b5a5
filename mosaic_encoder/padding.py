"""Moving between padded batches (B, S, ...) and packed real tokens (T, ...).

The encoder computes on real tokens only. A :class:`Packing` records where each real token sits
in the padded batch and where each sequence starts in the packed one (``cu_seqlens``, the
convention of variable-length attention kernels).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .errors import InputError


@dataclass(frozen=True)
class Packing:
    """Layout of a packed batch.

    Attributes:
        indices: (T,) int64, flat index ``b * S + s`` of each real token, in order.
        cu_seqlens: (B + 1,) int32, start of each sequence in the packed tokens, last = T.
        max_seqlen: length of the longest sequence (python int).
        batch_size, seqlen: B and S of the padded layout.
    """

    indices: torch.Tensor
    cu_seqlens: torch.Tensor
    max_seqlen: int
    batch_size: int
    seqlen: int

    @property
    def num_tokens(self) -> int:
        return self.indices.numel()

    def seqlens(self) -> list[int]:
        """Lengths of the sequences, in batch order."""
        return self.cu_seqlens.diff().tolist()

    def positions(self) -> torch.Tensor:
        """(T,) int64 position of each packed token within its own sequence, from 0."""
        starts = self.cu_seqlens[:-1].to(torch.int64)
        lengths = self.cu_seqlens.diff().to(torch.int64)
        token_index = torch.arange(self.num_tokens, device=self.indices.device)
        return token_index - torch.repeat_interleave(starts, lengths, output_size=self.num_tokens)

    @classmethod
    def from_mask(cls, attention_mask: torch.Tensor) -> Packing:
        """Packing of the tokens where ``attention_mask`` (B, S) is 1.

        Each row's real tokens must be one contiguous run (right or left padding); a mask with
        holes would give positions that differ from the padded computation's. A row may have no
        real token at all (its length is 0), and the batch may have no rows.
        """
        if attention_mask.dim() != 2:
            raise InputError(f"attention_mask must have shape (batch, seqlen), got "
                             f"{tuple(attention_mask.shape)}.")
        if attention_mask.is_complex():
            raise InputError(f"attention_mask must be real 0s and 1s, got {attention_mask.dtype}.")
        # Checked before the cast: a float mask of 0.5 or 1.7 would otherwise truncate silently.
        bad = (attention_mask != 0) & (attention_mask != 1)
        if bad.any():
            value = attention_mask[bad][0].item()
            raise InputError(f"attention_mask must contain only 0 and 1, found {value!r}.")
        mask = attention_mask.to(torch.int64)
        run_starts = (mask.diff(dim=1, prepend=torch.zeros_like(mask[:, :1])) == 1).sum(dim=1)
        if (run_starts > 1).any():
            row = int((run_starts > 1).nonzero()[0, 0])
            raise InputError(f"attention_mask row {row} has gaps; real tokens must be contiguous.")
        lengths = mask.sum(dim=1)
        cu_seqlens = F.pad(lengths.cumsum(0), (1, 0)).to(torch.int32)
        indices = mask.flatten().nonzero().flatten()
        batch, seqlen = mask.shape
        return cls(indices=indices, cu_seqlens=cu_seqlens,
                   max_seqlen=int(lengths.max()) if batch else 0, batch_size=batch, seqlen=seqlen)


def unpad(padded: torch.Tensor, packing: Packing) -> torch.Tensor:
    """Gather the real tokens: (B, S, ...) -> (T, ...)."""
    return padded.flatten(0, 1)[packing.indices]


def pad(packed: torch.Tensor, packing: Packing) -> torch.Tensor:
    """Scatter packed tokens back: (T, ...) -> (B, S, ...), exact zeros at padded positions."""
    out = packed.new_zeros((packing.batch_size * packing.seqlen, *packed.shape[1:]))
    out[packing.indices] = packed
    return out.view(packing.batch_size, packing.seqlen, *packed.shape[1:])
