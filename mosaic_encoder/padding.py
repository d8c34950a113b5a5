"""Moving between padded batches (B, S, ...) and packed tokens (T, ...).

The encoder computes on a list of tokens with sequence boundaries ``cu_seqlens`` (the convention
of variable-length attention kernels). Two layouts provide one:

- :class:`Packing` keeps the real tokens only. Its token count depends on the mask's values, so
  it is built eagerly, with the mask checked.
- :class:`PaddedRows` keeps every position of the padded batch: each row is three sequences,
  its leading padding, its real tokens and its trailing padding, so that real tokens attend only
  to real tokens and the padding only to itself. Every shape follows from the batch's shape,
  which is what ``torch.compile``, ``torch.export`` and ONNX need; it computes the same real
  tokens at the price of computing the padding too.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange

from .errors import InputError


@dataclass(frozen=True)
class Packing:
    """Layout of a batch packed to its real tokens.

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

    def unpad(self, padded: torch.Tensor) -> torch.Tensor:
        """Gather the real tokens: (B, S, ...) -> (T, ...)."""
        return rearrange(padded, "b s ... -> (b s) ...")[self.indices]

    def pad(self, packed: torch.Tensor) -> torch.Tensor:
        """Scatter packed tokens back: (T, ...) -> (B, S, ...), exact zeros at padded positions."""
        out = packed.new_zeros((self.batch_size * self.seqlen, *packed.shape[1:]))
        out[self.indices] = packed
        return rearrange(out, "(b s) ... -> b s ...", b=self.batch_size, s=self.seqlen)

    @classmethod
    def from_mask(cls, attention_mask: torch.Tensor) -> Packing:
        """Packing of the tokens where ``attention_mask`` (B, S) is 1.

        Each row's real tokens must be one contiguous run (right or left padding); a mask with
        holes would give positions that differ from the padded computation's. A row may have no
        real token at all (its length is 0), and the batch may have no rows.
        """
        check_mask(attention_mask)
        mask = attention_mask.to(torch.int64)
        lengths = mask.sum(dim=1)
        cu_seqlens = F.pad(lengths.cumsum(0), (1, 0)).to(torch.int32)
        indices = mask.flatten().nonzero().flatten()
        batch, seqlen = mask.shape
        return cls(indices=indices, cu_seqlens=cu_seqlens,
                   max_seqlen=int(lengths.max()) if batch else 0, batch_size=batch, seqlen=seqlen)


def check_mask(attention_mask: torch.Tensor) -> None:
    """Refuse a (B, S) mask that is not 0 and 1 with one contiguous run of ones per row.

    Reads the mask's values, so it runs eagerly (compiled code skips it).
    """
    if attention_mask.dim() != 2:
        raise InputError(f"attention_mask must have shape (batch, seqlen), got "
                         f"{tuple(attention_mask.shape)}.")
    if attention_mask.is_complex():
        raise InputError(f"attention_mask must be real 0s and 1s, got {attention_mask.dtype}.")
    # Checked before any cast: a float mask of 0.5 or 1.7 would otherwise truncate silently.
    bad = (attention_mask != 0) & (attention_mask != 1)
    if bad.any():
        value = attention_mask[bad][0].item()
        raise InputError(f"attention_mask must contain only 0 and 1, found {value!r}.")
    mask = attention_mask.to(torch.int64)
    run_starts = (mask.diff(dim=1, prepend=torch.zeros_like(mask[:, :1])) == 1).sum(dim=1)
    if (run_starts > 1).any():
        row = int((run_starts > 1).nonzero()[0, 0])
        raise InputError(f"attention_mask row {row} has gaps; real tokens must be contiguous.")


@dataclass(frozen=True)
class PaddedRows:
    """The padded batch itself as packed tokens: T = B * S, token ``b * S + s``.

    Row b is the three sequences ``[0, start_b)`` (leading padding), ``[start_b, start_b +
    length_b)`` (its real tokens) and the trailing padding, so every sequence lies inside one row
    of ``max_seqlen`` = S tokens (:func:`mosaic_encoder.attention.padded_rows_attention` relies on
    it). The mask is not checked: a row whose ones have gaps reads as one run from its first
    one, as many tokens long as it has ones.

    Attributes:
        mask: (B, S) bool, the real tokens.
        cu_seqlens: (3B + 1,) int32 sequence boundaries, empty sequences included.
        max_seqlen: S, every sequence's upper bound.
        batch_size, seqlen: B and S.
    """

    mask: torch.Tensor
    cu_seqlens: torch.Tensor
    max_seqlen: int
    batch_size: int
    seqlen: int

    @property
    def num_tokens(self) -> int:
        return self.batch_size * self.seqlen

    def positions(self) -> torch.Tensor:
        """(T,) int64 position of each real token within its sequence; 0 at padding."""
        token = torch.arange(self.num_tokens, device=self.mask.device)
        row_first = rearrange(self.cu_seqlens[1:-1:3].to(torch.int64), "b -> b 1")
        position = rearrange(token, "(b s) -> b s", b=self.batch_size, s=self.seqlen) - row_first
        return rearrange(position * self.mask, "b s -> (b s)")

    def unpad(self, padded: torch.Tensor) -> torch.Tensor:
        """(B, S, ...) -> (B * S, ...), a view."""
        return rearrange(padded, "b s ... -> (b s) ...")

    def pad(self, packed: torch.Tensor) -> torch.Tensor:
        """(B * S, ...) -> (B, S, ...), exact zeros at padded positions."""
        padded = rearrange(packed, "(b s) ... -> b s ...", b=self.batch_size, s=self.seqlen)
        mask = self.mask.view(*self.mask.shape, *(1,) * (packed.dim() - 1))
        return torch.where(mask, padded, torch.zeros((), dtype=packed.dtype, device=packed.device))

    @classmethod
    def from_mask(cls, attention_mask: torch.Tensor) -> PaddedRows:
        """The rows of ``attention_mask`` (B, S), 1 at real tokens; reads no value on the host."""
        mask = attention_mask != 0
        batch, seqlen = mask.shape
        lengths = mask.sum(dim=1)
        starts = (mask.cumsum(dim=1) == 0).sum(dim=1)  # leading zeros: seqlen for an empty row
        row_start = torch.arange(batch, device=mask.device) * seqlen
        boundaries = torch.stack([row_start, row_start + starts, row_start + starts + lengths], 1)
        total = torch.full((1,), batch * seqlen, device=mask.device, dtype=boundaries.dtype)
        cu_seqlens = torch.cat([rearrange(boundaries, "b k -> (b k)"), total]).to(torch.int32)
        return cls(mask=mask, cu_seqlens=cu_seqlens, max_seqlen=seqlen, batch_size=batch,
                   seqlen=seqlen)


def unpad(padded: torch.Tensor, packing: Packing | PaddedRows) -> torch.Tensor:
    """(B, S, ...) -> the packing's tokens (T, ...)."""
    return packing.unpad(padded)


def pad(packed: torch.Tensor, packing: Packing | PaddedRows) -> torch.Tensor:
    """The packing's tokens (T, ...) -> (B, S, ...), exact zeros at padded positions."""
    return packing.pad(packed)
