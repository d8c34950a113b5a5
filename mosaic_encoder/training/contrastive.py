"""Contrastive fine-tuning as a :class:`~.loop.Task`: in-batch negatives over torchrun processes.

Every rank embeds its slice of the global batch (:mod:`.data`) and gathers every rank's
embeddings with their gradients; it scores its own anchors against the positives and hard
negatives of every rank (and, for the symmetric loss, its own positives against every anchor).
Each rank's loss is the mean over its own rows, and DDP averages the gradients over ranks, so the
update equals that of one process with the whole global batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ContextManager

import torch
from torch import nn

from ..checkpoint import summarise_names
from ..errors import CheckpointError, InputError
from ..files import json_object, read_json
from ..loading import load_model
from ..models import unwrap_encoder
from ..tokenizer import TextTokenizer, TokenizedBatch
from . import distributed, gradcache, run_dir
from .config import TrainConfig
from .data import BatchSchedule, PairFile, read_pair_file
from .distributed import Processes
from .evaluation import evaluate
from .loop import StepCallback, TrainResult, run
from .loss import ContrastiveLoss
from .model import SentenceModel, to_device


def train(config: TrainConfig, on_step: StepCallback | None = None) -> TrainResult:
    """Run ``config`` in this process (one of several under torchrun); see :func:`.loop.run`."""
    return run(config.loop, lambda processes: ContrastiveTask(config, processes), on_step)


@dataclass(frozen=True)
class ContrastiveBatch:
    """This rank's share of a global batch: ``anchors`` anchors, then as many positives, then
    ``negatives`` columns of as many hard negatives; (R, S) tokens on the model's device."""

    tokens: TokenizedBatch
    anchors: int
    negatives: int


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
        self.schedule = BatchSchedule(self.files, config.batch_size, config.seed,
                                      config.no_duplicates)
        self.steps = config.steps or self.schedule.steps(config.epochs)
        self.loss = ContrastiveLoss(config.loss, config.scale, config.matryoshka_dims)
        self.autocast = config.autocast(processes.device)
        self.fingerprint = {"data": [[str(f.path), len(f)] for f in self.files],
                            "batch_size": config.batch_size, "no_duplicates": config.no_duplicates,
                            "loss": config.loss, "scale": config.scale,
                            "matryoshka_dims": list(config.matryoshka_dims),
                            "query_prompt": config.query_prompt,
                            "document_prompt": config.document_prompt,
                            "max_seq_length": config.max_seq_length,
                            "dtype": str(self.autocast or torch.float32)}

        self.source = run_dir.Source.read(config.model)
        directory = self.source.pipeline.transformer_dir
        self.encoder = unwrap_encoder(load_model(directory, dtype=torch.float32,
                                                 device=processes.device,
                                                 attention=config.attention))
        self.encoder.encoder.gradient_checkpointing = config.gradient_checkpointing
        max_length = config.max_seq_length
        if self.encoder.config.longest_input is not None:
            max_length = min(max_length, self.encoder.config.longest_input)
        self.tokenizer = TextTokenizer(directory / "tokenizer.json", max_length,
                                       self.source.pipeline.do_lower_case)
        self.model: nn.Module = SentenceModel(self.encoder, self.source.pipeline.pooling,
                                              self.autocast).train()
        width = self.encoder.config.hidden_size * len(self.source.pipeline.pooling.modes)
        if any(dim > width for dim in config.matryoshka_dims):
            raise InputError(f"--matryoshka-dims {max(config.matryoshka_dims)} exceeds the "
                             f"model's embedding size {width}.")
        self.st_settings = self._st_settings()

    def _st_settings(self) -> dict[str, Any] | None:
        """The starting checkpoint's ``config_sentence_transformers.json``, with the prompts."""
        path = self.source.directory / run_dir.ST_SETTINGS_FILE
        values = json_object(read_json(path, "sentence-transformers config"),
                             "sentence-transformers config", path) if path.is_file() else {}
        prompts = {name: prompt for name, prompt in (("query", self.config.query_prompt),
                                                    ("document", self.config.document_prompt))
                   if prompt is not None}
        if prompts:
            values = dict(values, prompts={**values.get("prompts", {}), **prompts})
            values.setdefault("default_prompt_name", None)
            values.setdefault("similarity_fn_name", "cosine")
        return values or None

    def _prompted(self, texts: list[str], prompt: str | None) -> list[str]:
        return [prompt + text for text in texts] if prompt else texts

    def batch(self, step: int, rank: int, world_size: int) -> ContrastiveBatch:
        chosen = self.schedule.batch(step)
        anchors, positives, negatives = self.files[chosen.file].take(chosen.shard(rank,
                                                                                  world_size))
        documents = [text for column in (positives, *negatives) for text in column]
        tokens = self.tokenizer(self._prompted(anchors, self.config.query_prompt)
                                + self._prompted(documents, self.config.document_prompt))
        return ContrastiveBatch(to_device(tokens, self.processes.device), len(anchors),
                                len(negatives))

    def backward(self, wrapped: nn.Module, batch: ContrastiveBatch,
                 no_sync: Callable[[], ContextManager]) -> tuple[float, int]:
        loss = gradcache.backward(wrapped, batch.tokens, self._loss_of(batch),
                                  self.config.chunk_size, no_sync)
        return float(loss), int(batch.tokens.attention_mask.sum())

    def _loss_of(self, batch: ContrastiveBatch) -> Callable[[torch.Tensor], torch.Tensor]:
        """(R, D) embeddings of this rank's rows -> its loss against every rank's rows."""
        count, processes = batch.anchors, self.processes

        def loss_of(embeddings: torch.Tensor) -> torch.Tensor:
            gathered = distributed.gather_with_grad(embeddings, processes)
            # (ranks, columns: anchor, positive, negatives..., count, D)
            columns = gathered.view(processes.world_size, 2 + batch.negatives, count, -1)
            dim = gathered.shape[-1]
            negatives = columns[:, 2:].transpose(0, 1).reshape(-1, dim) \
                if batch.negatives else None
            return self.loss(columns[:, 0].reshape(-1, dim), columns[:, 1].reshape(-1, dim),
                             negatives, processes.rank * count, count)

        return loss_of

    def evaluate(self, step: int) -> dict[str, Any] | None:
        if self.held_out is None:
            return None
        found = evaluate(self.model, self.tokenizer,
                         self._prompted(self.held_out.anchors, self.config.query_prompt),
                         self._prompted(self.held_out.positives, self.config.document_prompt),
                         self.processes.device, self.config.matryoshka_dims)
        record: dict[str, Any] = {"eval_size": len(self.held_out)}
        for dim, metrics in found.items():
            suffix = "" if dim is None else f"@{dim}"
            record[f"eval_recall_at_1{suffix}"] = metrics.recall_at_1
            record[f"eval_mrr{suffix}"] = metrics.mrr
        return record

    def save_model(self, directory: Path) -> None:
        run_dir.write_sentence_model(directory, self.encoder, self.source, self.st_settings)

    def load_model(self, directory: Path) -> None:
        trained = unwrap_encoder(load_model(directory, device=self.processes.device)).state_dict()
        ours = self.encoder.state_dict()
        differing = sorted(set(ours) ^ set(trained)) + sorted(
            name for name in set(ours) & set(trained) if ours[name].shape != trained[name].shape)
        if differing:
            raise CheckpointError(f"checkpoint {directory} holds another model than the one this "
                                  f"run trains ({summarise_names(differing)} differ); resume from "
                                  f"this run's own checkpoints, or start a new run.")
        self.encoder.load_state_dict(trained)
