"""Masked-LM pretraining as a task of the shared training loop (:mod:`mosaic_encoder.training`).

The loop owns the optimizer, schedule, clipping, DDP, checkpoints, resume, logging and progress
bar (:class:`~mosaic_encoder.training.loop.Task` is the protocol); this task says what a batch is, how its gradient is computed, how the model is scored and
how it is written.

Every process builds the global batch of a step (the same sequences, masked by a generator
seeded with the run's seed and the step) and takes its contiguous slice of rows. Each process's
loss is its summed cross-entropy divided by the global batch's count of masked tokens, times the
number of processes: DDP averages gradients over processes, so the update is that of the mean
over every masked token of the global batch, as one process computes it (equal with dropout off,
since each process draws its own dropout masks).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ContextManager

import torch
from torch import nn

from ..config import read_config_values
from ..errors import CheckpointError, InputError
from ..loading import load_model
from ..models import MosaicBertForMaskedLM
from ..tokenizer import TextTokenizer
from .config import PretrainConfig
from .documents import DocumentFile, check_corpus
from .evaluation import evaluate_lengths
from .masking import MaskedBatch, masker_for
from .model_files import write_masked_lm
from .objective import MaskedLMObjective
from .packing import SequencePacker
from .stream import Batches, SequenceStream


@dataclass(frozen=True)
class StepBatch:
    """One process's share of a step: its rows of the masked global batch.

    Attributes:
        rows: this process's sequences, corrupted, with their selection and labels.
        global_selected: masked tokens in the whole global batch (the loss's denominator).
        world_size: processes sharing the global batch.
    """

    rows: MaskedBatch
    global_selected: int
    world_size: int


def load_masked_lm(directory: Path, device: torch.device, attention: str
                   ) -> MosaicBertForMaskedLM:
    """A masked-LM checkpoint in float32, ready to train; any other checkpoint is an error."""
    model = load_model(directory, dtype=torch.float32, device=device, attention=attention)
    if not isinstance(model, MosaicBertForMaskedLM):
        raise CheckpointError(f"checkpoint {directory} has no masked-LM head (cls.predictions); "
                              f"pretrain a model written by `mosaic-encoder init` or a masked-LM "
                              f"checkpoint such as mosaic-bert-base-seqlen-2048.")
    return model


class MaskedLMTask:
    """Masked-LM pretraining of ``config.model`` on ``config.data``.

    Construction reads and checks everything (checkpoint, tokenizer, the whole corpus, geometry)
    before the loop writes anything.
    """

    def __init__(self, config: PretrainConfig, device: torch.device):
        self.config, self.device = config, device
        source = Path(config.model)
        self.source = source
        self.base_config = read_config_values(source / "config.json")
        model = load_masked_lm(source, device, config.attention)
        architecture = model.config
        longest = architecture.longest_input
        if longest is not None and config.max_seq_length > longest:
            raise InputError(f"--max-seq-length {config.max_seq_length} exceeds the positions of "
                             f"{source} ({architecture.input_limit}).")
        self.tokenizer = TextTokenizer(source / "tokenizer.json")
        if self.tokenizer.largest_id >= architecture.vocab_size:
            raise CheckpointError(f"tokenizer of {source} has ids up to "
                                  f"{self.tokenizer.largest_id}, beyond the model's vocab_size "
                                  f"{architecture.vocab_size}.")
        self.masker = masker_for(self.tokenizer, config.masking)
        files = [DocumentFile.open(path, config.field) for path in config.data]
        self.eval_files = [DocumentFile.open(config.eval_data, config.field)] \
            if config.eval_data is not None else []
        check_corpus(files + self.eval_files)
        stream = SequenceStream(files, SequencePacker(self.tokenizer, config.max_seq_length),
                                config.seed)
        stream.check()
        self.batches = Batches(stream, config.batch_size)
        self.masked_lm = model.train()
        self.model: nn.Module = MaskedLMObjective(model)
        self.steps = config.steps
        self.fingerprint: dict[str, Any] = {
            "data": [[str(f.path), f.size] for f in files], "batch_size": config.batch_size,
            "max_seq_length": config.max_seq_length, "seed": config.seed,
            "masking": [config.masking.rate, config.masking.mask, config.masking.random]}

    def batch(self, step: int, rank: int, world_size: int) -> StepBatch:
        """This process's rows of the global batch of ``step``."""
        if self.config.batch_size % world_size:
            raise InputError(f"the batch size {self.config.batch_size} must be a multiple of the "
                             f"number of processes ({world_size}).")
        ids = self.batches.batch(step)
        generator = torch.Generator().manual_seed(self.config.seed * 1_000_003 + step)
        masked = self.masker(ids, torch.ones_like(ids), generator)
        share = self.config.batch_size // world_size
        return StepBatch(masked.rows(rank * share, (rank + 1) * share), masked.num_selected,
                         world_size)

    def backward(self, wrapped: nn.Module, batch: StepBatch,
                 no_sync: Callable[[], ContextManager]) -> tuple[float, int]:
        """Accumulate this process's gradient of the step's loss.

        Returns:
            this process's loss (its summed cross-entropy over the global batch's masked-token
            count, times the number of processes: the mean over processes is the global batch's
            mean cross-entropy), and its count of real tokens.
        """
        parts = [p for p in _split(batch.rows, self.config.accumulation) if len(p.input_ids)]
        scale = batch.world_size / max(1, batch.global_selected)
        total = 0.0
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            with contextlib.nullcontext() if last else no_sync():
                result = wrapped(*(t.to(self.device) for t in (
                    part.input_ids, part.attention_mask, part.selected, part.labels)))
                (result.loss * scale).backward()
            total += float(result.loss.detach())
        return total * scale, int(batch.rows.attention_mask.sum())

    def evaluate(self, step: int) -> dict[str, Any] | None:
        """Held-out loss and accuracy at the training length, or None without held-out data."""
        if not self.eval_files:
            return None
        (score,) = evaluate_lengths(self.masked_lm, self.tokenizer, self.eval_files,
                                    [self.config.max_seq_length], self.config.eval_tokens,
                                    self.config.seed, self.config.masking)
        return {"step": step, "eval_loss": score.loss, "eval_accuracy": score.accuracy,
                "eval_predicted": score.predicted}

    def save_model(self, directory: Path) -> None:
        """Write the model's checkpoint files into the existing ``directory``."""
        write_masked_lm(directory, self.masked_lm, self.source, self.base_config)

    def load_model(self, directory: Path) -> None:
        """Take the weights :meth:`save_model` wrote into ``directory`` (to resume)."""
        saved = load_masked_lm(directory, self.device, self.config.attention)
        self.masked_lm.load_state_dict(saved.state_dict())
        self.masked_lm.tie_weights()


def _split(batch: MaskedBatch, parts: int) -> list[MaskedBatch]:
    """``parts`` contiguous runs of rows, as equal as can be."""
    rows = len(batch.input_ids)
    bounds = [rows * i // parts for i in range(parts + 1)]
    return [batch.rows(start, stop) for start, stop in zip(bounds, bounds[1:])]
