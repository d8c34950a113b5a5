"""Masked-LM corruption: which tokens are predicted, and what the model sees in their place.

BERT's scheme: each ordinary token is selected with probability ``rate``; a selected token is
replaced by ``[MASK]`` with probability ``mask``, by a uniformly drawn ordinary token with
probability ``random``, and left as it is otherwise. Special tokens ([CLS], [SEP], [PAD], [MASK],
...) are never selected. Every draw comes from a ``torch.Generator`` the caller seeds, so a batch's
masks are a function of its seed alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import CheckpointError, InputError
from ..tokenizer import TextTokenizer
from .config import MaskingRates

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")  # BERT's; never selected


@dataclass(frozen=True)
class MaskedBatch:
    """A corrupted padded batch.

    Attributes:
        input_ids: (B, S) int64, what the model sees.
        attention_mask: (B, S) int64, 1 on real tokens.
        selected: (B, S) bool, the tokens to predict.
        labels: (B, S) int64, the original ids (the targets at ``selected``).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    selected: torch.Tensor
    labels: torch.Tensor

    def rows(self, start: int, stop: int) -> MaskedBatch:
        return MaskedBatch(self.input_ids[start:stop], self.attention_mask[start:stop],
                           self.selected[start:stop], self.labels[start:stop])

    @property
    def num_selected(self) -> int:
        return int(self.selected.sum())

    def to(self, device: torch.device) -> MaskedBatch:
        return MaskedBatch(self.input_ids.to(device), self.attention_mask.to(device),
                           self.selected.to(device), self.labels.to(device))


class Masker:
    """Applies :class:`MaskingRates` with a tokenizer's special and ordinary ids.

    Args:
        rates: the corruption.
        mask_id: the ``[MASK]`` id.
        special_ids: ids never selected and never drawn as random replacements.
        vocab_size: ids below it are the tokenizer's; random replacements are drawn among them.
    """

    def __init__(self, rates: MaskingRates, mask_id: int, special_ids: list[int], vocab_size: int):
        self.rates = rates
        self.mask_id = mask_id
        self.special = torch.tensor(sorted(set(special_ids)), dtype=torch.int64)
        ordinary = torch.ones(vocab_size, dtype=torch.bool)
        ordinary[self.special[self.special < vocab_size]] = False
        self.ordinary = ordinary.nonzero().flatten()
        if not len(self.ordinary):
            raise InputError("the tokenizer has no ordinary tokens to mask.")

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 generator: torch.Generator) -> MaskedBatch:
        """input_ids, attention_mask: (B, S) int64 on the CPU -> the corrupted batch.

        The draws are made for every position, real or not, in a fixed order, so the result
        depends on the generator's state and the batch shape only.
        """
        shape = input_ids.shape
        selectable = attention_mask.bool() & ~torch.isin(input_ids, self.special)
        selected = (torch.rand(shape, generator=generator) < self.rates.rate) & selectable
        action = torch.rand(shape, generator=generator)
        replacement = self.ordinary[torch.randint(len(self.ordinary), shape, generator=generator)]
        shown = torch.where(action < self.rates.mask, torch.full_like(input_ids, self.mask_id),
                            torch.where(action < self.rates.mask + self.rates.random,
                                        replacement, input_ids))
        return MaskedBatch(torch.where(selected, shown, input_ids), attention_mask, selected,
                           input_ids)


def masker_for(tokenizer: TextTokenizer, rates: MaskingRates) -> Masker:
    """A :class:`Masker` with the tokenizer's ``[MASK]`` and BERT's special tokens."""
    mask_id = tokenizer.token_to_id("[MASK]")
    if mask_id is None:
        raise CheckpointError(f"tokenizer file {tokenizer.path} has no [MASK] token, which "
                              f"masked-LM training needs.")
    special = [i for i in map(tokenizer.token_to_id, SPECIAL_TOKENS) if i is not None]
    return Masker(rates, mask_id, special, tokenizer.vocab_size)
