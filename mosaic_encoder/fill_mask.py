"""Masked-LM predictions for the ``[MASK]`` tokens of texts.

The encoder runs on the packed real tokens; only the rows of ``[MASK]`` tokens go through the
masked-LM head. Projecting every token onto the vocabulary would cost ``T x V`` floats (4.1 GB
for a 16k-token input with BERT's 30k vocabulary) to keep a handful of rows. The mask rows
themselves go through the head :data:`MASK_ROWS_PER_PASS` at a time, keeping only their top-k,
so a text made of 20,000 ``[MASK]`` tokens needs no more memory for the vocabulary scores than
one with 256 (all of them at once would be a 2.4 GB matrix, and as much again for its softmax).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

import torch

from .api_arguments import int_arg, text_list
from .errors import NON_FINITE_ADVICE, ArgumentError, CheckpointError, InputError, NonFiniteError
from .models import MosaicBertForMaskedLM
from .tokenizer import TextTokenizer, collate

MASK_TOKEN = "[MASK]"
# Mask rows scored per pass of the masked-LM head: (256, V) float32 scores are 31 MB for V = 30k.
MASK_ROWS_PER_PASS = 256


@dataclass(frozen=True)
class TokenPrediction:
    """One candidate for a mask: the token, its id and its probability over the vocabulary."""

    token: str
    id: int
    probability: float


@dataclass(frozen=True)
class MaskPrediction:
    """The ``top_k`` candidates for the mask at token ``position`` (``[CLS]`` is position 0)."""

    position: int
    predictions: list[TokenPrediction]


@dataclass(frozen=True)
class FillMaskResult:
    """Every mask of one text, in order."""

    text: str
    masks: list[MaskPrediction]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, probabilities rounded to 6 decimals."""
        values = dataclasses.asdict(self)
        for mask in values["masks"]:
            for prediction in mask["predictions"]:
                prediction["probability"] = round(prediction["probability"], 6)
        return values


def masked_token_ids(tokenizer: TextTokenizer,
                     texts: list[str]) -> tuple[list[list[int]], list[list[int]], int]:
    """Token ids and type ids of texts that each hold a ``[MASK]``, and the mask's id.

    Raises:
        CheckpointError: the tokenizer has no ``[MASK]`` token.
        InputError: a text has no ``[MASK]`` (or lost it to truncation).
    """
    mask_id = tokenizer.token_to_id(MASK_TOKEN)
    if mask_id is None:
        raise CheckpointError(f"the tokenizer has no {MASK_TOKEN} token, so it cannot fill masks.")
    ids, types, _ = tokenizer.encode_ids(texts)
    for number, (text, row) in enumerate(zip(texts, ids), start=1):
        if mask_id not in row:
            preview = text if len(text) <= 60 else text[:57] + "..."
            if MASK_TOKEN in text:  # the tokenizer found it, then truncation dropped it
                limit = tokenizer.max_length
                raise InputError(f"text {number} ({preview!r}) has its {MASK_TOKEN} after the "
                                 f"first {limit} tokens, where max_seq_length {limit} cuts the "
                                 f"text; raise max_seq_length or move the {MASK_TOKEN} earlier.")
            raise InputError(f"text {number} ({preview!r}) has no {MASK_TOKEN} token to fill "
                             f"(write it in capitals, e.g. 'Paris is the {MASK_TOKEN} of France').")
    return ids, types, mask_id


@torch.inference_mode()
def fill_mask(model: MosaicBertForMaskedLM, tokenizer: TextTokenizer, texts: list[str],
              top_k: int = 5, batch_size: int = 32) -> list[FillMaskResult]:
    """The ``top_k`` most probable tokens for every ``[MASK]`` of every text.

    Probabilities are the softmax over the model's whole vocabulary; candidates are drawn from
    the tokenizer's entries only (embedding rows past them are padding no text can produce).

    Args:
        model: a masked-LM model (:func:`mosaic_encoder.load_model` on a masked-LM checkpoint).
        tokenizer: the checkpoint's tokenizer.
        texts: each with at least one ``[MASK]``.
        top_k: candidates per mask (at most the tokenizer's size).
        batch_size: texts per forward pass.
    Returns:
        One :class:`FillMaskResult` per text, in order.
    Raises:
        InputError: an argument of the wrong type or value, or a text without ``[MASK]``.
        NonFiniteError: the model scores a mask with NaN or infinity (its weights overflow in
            this dtype, or are corrupt), so no probability can be given.
    """
    if not isinstance(model, MosaicBertForMaskedLM):
        raise ArgumentError(f"fill_mask needs a masked-LM model, got {type(model).__name__}.")
    if not isinstance(tokenizer, TextTokenizer):
        raise ArgumentError(f"fill_mask needs a TextTokenizer, got {type(tokenizer).__name__}.")
    texts = text_list(texts, "texts")
    top_k, batch_size = int_arg(top_k, "top_k"), int_arg(batch_size, "batch_size")
    ids, types, mask_id = masked_token_ids(tokenizer, texts)
    device = next(model.parameters()).device
    results = []
    for start in range(0, len(texts), batch_size):
        chunk = range(start, min(start + batch_size, len(texts)))
        batch = collate([ids[i] for i in chunk], [types[i] for i in chunk], tokenizer.pad_token_id)
        input_ids = batch.input_ids.to(device)
        hidden, packing = model.bert.encode_packed(input_ids, batch.attention_mask.to(device),
                                                   batch.token_type_ids.to(device))
        # Packed rows holding [MASK], in batch-row then position order.
        rows = (input_ids.flatten()[packing.indices] == mask_id).nonzero().flatten()
        masks: dict[int, list[MaskPrediction]] = {row: [] for row in range(len(chunk))}
        for first in range(0, len(rows), MASK_ROWS_PER_PASS):
            part = rows[first:first + MASK_ROWS_PER_PASS]
            # (row in the batch, token position) of each mask of this pass.
            places = [divmod(where, input_ids.shape[1]) for where in packing.indices[part].tolist()]
            values, indices = _top_tokens(model, hidden[part], tokenizer.vocab_size, top_k,
                                          lambda i: (start + places[i][0] + 1, places[i][1]))
            for (row, position), row_values, row_indices in zip(places, values, indices):
                masks[row].append(MaskPrediction(position, [
                    TokenPrediction(tokenizer.id_to_token(i), i, p)
                    for p, i in zip(row_values, row_indices)]))
        results += [FillMaskResult(texts[index], masks[row]) for row, index in enumerate(chunk)]
    return results


def _top_tokens(model: MosaicBertForMaskedLM, hidden: torch.Tensor, known: int, top_k: int,
                where: Callable[[int], tuple[int, int]]) -> tuple[list[list[float]], list[list[int]]]:
    """Probabilities and ids of the ``top_k`` likeliest of the first ``known`` tokens for each of
    the mask rows ``hidden`` (M, H), as (M, top_k) lists; ``where(i)`` names row i's text number
    and token position when its scores are not finite."""
    logits = model.cls.predictions(hidden).float()  # (M, V)
    finite = torch.isfinite(logits).all(dim=-1)
    if not bool(finite.all()):
        text, position = where(int((~finite).nonzero()[0]))
        dtype = str(hidden.dtype).removeprefix("torch.")
        raise NonFiniteError(f"the masked-LM scores of the {MASK_TOKEN} at token {position} of "
                             f"text {text} are not finite (NaN or Inf in {dtype}): "
                             f"{NON_FINITE_ADVICE}.")
    probabilities = torch.softmax(logits, dim=-1)[:, :known]
    top = torch.topk(probabilities, min(top_k, known), dim=-1)
    return top.values.tolist(), top.indices.tolist()
