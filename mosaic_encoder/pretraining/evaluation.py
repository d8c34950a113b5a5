"""Held-out masked-LM loss and accuracy at several sequence lengths (``eval-mlm``).

At each length ``L`` the held-out documents are packed, in file order, into sequences of ``L``
tokens (see :mod:`.packing`), and the first ``tokens`` tokens' worth of sequences is scored: every
length sees the same text. The whole set is masked at once by a generator seeded with ``seed``
(and ``L``), so two models with the same tokenizer are scored on the same masks whatever their
batch size. Lengths beyond the training length are allowed; a model with learned positions gets a
row marked as beyond its ``max_position_embeddings`` instead of a score.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from itertools import chain, islice

import torch

from ..models import MosaicBertForMaskedLM
from ..tokenizer import TextTokenizer
from .documents import DocumentFile
from .masking import MaskingRates, masker_for
from .objective import MaskedLMObjective
from .packing import SequencePacker

DEFAULT_TOKENS = 32768  # scored tokens per length (about 0.3 x as many are predicted)
DEFAULT_BATCH_TOKENS = 8192  # tokens per forward pass


@dataclass(frozen=True)
class LengthScore:
    """The score at one length.

    Attributes:
        length: tokens per sequence.
        sequences: sequences scored (0 when ``note`` says why none was).
        predicted: masked tokens scored.
        loss: mean cross-entropy over them (nats), None without a score.
        accuracy: share predicted exactly, None without a score.
        note: why there is no score, else None.
    """

    length: int
    sequences: int
    predicted: int
    loss: float | None
    accuracy: float | None
    note: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


@torch.inference_mode()
def evaluate_lengths(model: MosaicBertForMaskedLM, tokenizer: TextTokenizer,
                     files: list[DocumentFile], lengths: list[int], tokens: int = DEFAULT_TOKENS,
                     seed: int = 0, rates: MaskingRates = MaskingRates(),
                     batch_tokens: int = DEFAULT_BATCH_TOKENS) -> list[LengthScore]:
    """Score ``model`` on the held-out ``files`` at each of ``lengths``.

    Args:
        model: a masked-LM model (dropout is off while scoring).
        tokenizer: its tokenizer, without truncation.
        files: held-out corpus files, read in order.
        lengths: sequence lengths, [CLS] included.
        tokens: tokens scored per length (rounded up to whole sequences, capped by the data).
        seed: fixes the masks.
        rates: the corruption (the training recipe's by default).
        batch_tokens: tokens per forward pass.
    Returns:
        one :class:`LengthScore` per length, in the order given.
    """
    masker = masker_for(tokenizer, rates)
    objective = MaskedLMObjective(model)
    device = next(model.parameters()).device
    config = model.config
    training = model.training
    model.eval()
    scores = []
    try:
        for length in lengths:
            if config.longest_input is not None and length > config.longest_input:
                scores.append(LengthScore(length, 0, 0, None, None,
                                          f"beyond {config.input_limit}"))
                continue
            documents = chain.from_iterable(files)
            sequences = list(islice(SequencePacker(tokenizer, length)(documents),
                                    math.ceil(tokens / length)))
            if not sequences:
                scores.append(LengthScore(length, 0, 0, None, None,
                                          f"held-out data shorter than {length} tokens"))
                continue
            ids = torch.tensor(sequences, dtype=torch.int64)
            generator = torch.Generator().manual_seed(seed * 1_000_003 + length)
            batch = masker(ids, torch.ones_like(ids), generator)
            loss, correct, count = 0.0, 0, 0
            rows = max(1, batch_tokens // length)
            for start in range(0, len(sequences), rows):
                result = objective.score(batch.rows(start, start + rows).to(device))
                loss += float(result.loss)
                correct += int(result.correct)
                count += result.count
            scores.append(LengthScore(length, len(sequences), count,
                                      loss / count if count else None,
                                      correct / count if count else None,
                                      None if count else "no token was masked"))
    finally:
        model.train(training)
    return scores
