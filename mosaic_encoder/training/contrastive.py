"""Contrastive fine-tuning as a :class:`~.loop.Task`: in-batch negatives over torchrun processes.

Every rank embeds its slice of the global batch (:mod:`.data`) and scores its anchors against the
positives (and hard negatives) of every rank, gathered with their gradients. Each rank's loss is
the mean over its own anchors, and DDP averages the gradients over ranks, so the update equals that
of one process with the whole global batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ContextManager

import torch
from torch import nn

from ..errors import InputError
from ..loading import load_model
from ..models import unwrap_encoder
from ..tokenizer import TextTokenizer, TokenizedBatch
from . import distributed, gradcache, run_dir
from .config import TrainConfig
from .data import BatchSchedule, PairFile, read_pair_file
from .distributed import Processes
from .evaluation import evaluate
from .loop import StepCallback, TrainResult, run
from .loss import in_batch_negatives_loss
from .model import SentenceModel, to_device


def train(config: TrainConfig, on_step: StepCallback | None = None) -> TrainResult:
    """Run ``config`` in this process (one of several under torchrun); see :func:`.loop.run`."""
    return run(config.loop, lambda processes: ContrastiveTask(config, processes), on_step)


@dataclass(frozen=True)
class ContrastiveBatch:
    """This rank's share of a global batch: ``anchors`` anchors, then as many positives, then as
    many hard negatives when ``negatives``; (R, S) tokens on the model's device."""

    tokens: TokenizedBatch
    anchors: int
    negatives: bool


class ContrastiveTask:
    """Pairs or triplets, a sentence model and the in-batch negatives loss.

    Args:
        config: the run (data, starting checkpoint, batch size, loss scale, chunking).
        processes: this process's place in the run.
    Raises:
        InputError, CheckpointError: bad data, batch size or starting checkpoint.
    """

    def __init__(self, config: TrainConfig, processes: Processes):
        self.config, self.processes = config, processes
        self.files = [read_pair_file(path) for path in config.data]
        self.held_out: PairFile | None = read_pair_file(config.eval_data) \
            if config.eval_data is not None else None
        if config.batch_size % processes.world_size:
            raise InputError(f"the batch size {config.batch_size} must be a multiple of the "
                             f"number of processes ({processes.world_size}).")
        self.schedule = BatchSchedule(self.files, config.batch_size, config.seed)
        self.steps = config.steps or config.epochs * self.schedule.steps_per_epoch
        self.fingerprint = {"data": [[str(f.path), len(f)] for f in self.files],
                            "batch_size": config.batch_size}

        self.source = run_dir.Source.read(config.model)
        directory = self.source.pipeline.transformer_dir
        self.encoder = unwrap_encoder(load_model(directory, dtype=torch.float32,
                                                 device=processes.device,
                                                 attention=config.attention))
        max_length = config.max_seq_length
        if not self.encoder.config.uses_alibi:
            max_length = min(max_length, self.encoder.config.max_position_embeddings)
        self.tokenizer = TextTokenizer(directory / "tokenizer.json", max_length,
                                       self.source.pipeline.do_lower_case)
        self.model: nn.Module = SentenceModel(self.encoder, self.source.pipeline.pooling).train()

    def batch(self, step: int, rank: int, world_size: int) -> ContrastiveBatch:
        chosen = self.schedule.batch(step)
        anchors, positives, negatives = self.files[chosen.file].take(chosen.shard(rank,
                                                                                  world_size))
        tokens = self.tokenizer(anchors + positives + (negatives or []))
        return ContrastiveBatch(to_device(tokens, self.processes.device), len(anchors),
                                negatives is not None)

    def backward(self, wrapped: nn.Module, batch: ContrastiveBatch,
                 no_sync: Callable[[], ContextManager]) -> tuple[float, int]:
        loss = gradcache.backward(wrapped, batch.tokens, self._loss_of(batch),
                                  self.config.chunk_size, no_sync)
        return float(loss), int(batch.tokens.attention_mask.sum())

    def _loss_of(self, batch: ContrastiveBatch) -> Callable[[torch.Tensor], torch.Tensor]:
        """(R, D) embeddings of this rank's rows -> its loss against every rank's candidates."""
        count, processes = batch.anchors, self.processes

        def loss_of(embeddings: torch.Tensor) -> torch.Tensor:
            gathered = distributed.gather_with_grad(embeddings[count:], processes)
            per_rank = gathered.view(processes.world_size, -1, gathered.shape[-1])
            negatives = per_rank[:, count:].reshape(-1, gathered.shape[-1]) \
                if batch.negatives else None
            positives = per_rank[:, :count].reshape(-1, gathered.shape[-1])
            return in_batch_negatives_loss(embeddings[:count], positives, negatives,
                                           self.config.scale, first_label=processes.rank * count)

        return loss_of

    def evaluate(self, step: int) -> dict[str, Any] | None:
        if self.held_out is None:
            return None
        metrics = evaluate(self.model, self.tokenizer, self.held_out.anchors,
                           self.held_out.positives, self.processes.device)
        return {"eval_recall_at_1": metrics.recall_at_1, "eval_mrr": metrics.mrr,
                "eval_size": metrics.size}

    def save_model(self, directory: Path) -> None:
        run_dir.write_sentence_model(directory, self.encoder, self.source)

    def load_model(self, directory: Path) -> None:
        trained = unwrap_encoder(load_model(directory, device=self.processes.device))
        self.encoder.load_state_dict(trained.state_dict())
