"""The training loop: data, model, optimizer, schedule, logging, evaluation and checkpoints.

One function, :func:`train`, runs a whole :class:`TrainConfig` in this process. Under ``torchrun``
every process calls it; the model is wrapped in DistributedDataParallel, each rank embeds its slice
of the global batch (:mod:`mosaic_encoder.training.data`) and scores its anchors against the
positives (and hard negatives) of every rank, gathered with their gradients. Each rank's loss is the
mean over its own anchors, and DDP averages the gradients over ranks, so the update equals that of
one process with the whole global batch. Only rank 0 writes files and logs.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from ..atomic import atomic_write
from ..errors import InputError
from ..loading import load_model
from ..models import unwrap_encoder
from ..tokenizer import TextTokenizer
from . import checkpoints, distributed, gradcache
from .config import TrainConfig
from .data import BatchSchedule, read_pair_file
from .evaluation import evaluate
from .loss import in_batch_negatives_loss
from .model import SentenceModel, to_device

StepCallback = Callable[[int, dict[str, Any]], None]


@dataclass
class TrainResult:
    """What a run did: its output, steps, whether this is rank 0, and the per-step records and
    evaluations (as logged)."""

    output: Path
    steps: int
    main: bool = True
    records: list[dict[str, Any]] = field(default_factory=list)
    evaluations: list[dict[str, Any]] = field(default_factory=list)


def warmup_linear(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """Learning-rate factor: 0 -> 1 over ``warmup_steps``, then 1 -> 0 at ``total_steps``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / max(1, warmup_steps)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return factor


def _optimizer(model: SentenceModel, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW; biases and LayerNorm weights (the 1-d parameters) get no weight decay."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(
        [{"params": [p for p in trainable if p.dim() >= 2], "weight_decay": config.weight_decay},
         {"params": [p for p in trainable if p.dim() < 2], "weight_decay": 0.0}],
        lr=config.learning_rate)


def _rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


def _gather_rng(processes: distributed.Processes) -> list[dict[str, torch.Tensor]]:
    state = _rng_state(processes.device)
    if not processes.distributed:
        return [state]
    states: list[Any] = [None] * processes.world_size
    dist.all_gather_object(states, {k: v.cpu() for k, v in state.items()})
    return states


class _Log:
    """``output/log.jsonl``, appended by rank 0; a resumed run first drops records past its step."""

    def __init__(self, path: Path, enabled: bool, resumed_step: int | None):
        self.path, self.enabled = path, enabled
        if enabled and resumed_step is not None and path.is_file():
            kept = [line for line in path.read_text(encoding="utf-8").splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= resumed_step]
            data = "".join(f"{line}\n" for line in kept).encode("utf-8")
            atomic_write(path, lambda stream: stream.write(data))

    def write(self, record: dict[str, Any]) -> None:
        if self.enabled:
            with open(self.path, "a", encoding="utf-8") as stream:
                stream.write(json.dumps(record) + "\n")


def train(config: TrainConfig, on_step: StepCallback | None = None) -> TrainResult:
    """Run ``config`` in this process (one of several under torchrun).

    Args:
        config: the run.
        on_step: called after every optimizer step with (steps taken, the step's record).
    Returns:
        the run's records (on every rank; files are written by rank 0 only).
    Raises:
        InputError, CheckpointError: bad data, settings, starting checkpoint or output directory,
            before anything is written.
    """
    processes = distributed.start(config.device)
    try:
        return _train(config, processes, on_step)
    finally:
        distributed.stop(processes)


def _train(config: TrainConfig, processes: distributed.Processes,
           on_step: StepCallback | None) -> TrainResult:
    output, device = config.output, processes.device
    resume_from = checkpoints.check_output(output, config.resume)
    files = [read_pair_file(path) for path in config.data]
    held_out = read_pair_file(config.eval_data) if config.eval_data is not None else None
    if config.batch_size % processes.world_size:
        raise InputError(f"the batch size {config.batch_size} must be a multiple of the number of "
                         f"processes ({processes.world_size}).")
    schedule = BatchSchedule(files, config.batch_size, config.seed)
    total_steps = config.steps or config.epochs * schedule.steps_per_epoch
    fingerprint = {"data": [[str(f.path), len(f)] for f in files], "batch_size": config.batch_size,
                   "seed": config.seed, "steps": total_steps}

    source = checkpoints.Source.read(config.model)
    encoder = unwrap_encoder(load_model(source.pipeline.transformer_dir, dtype=torch.float32,
                                        device=device, attention=config.attention))
    max_length = config.max_seq_length
    if not encoder.config.uses_alibi:
        max_length = min(max_length, encoder.config.max_position_embeddings)
    tokenizer = TextTokenizer(source.pipeline.transformer_dir / "tokenizer.json", max_length)
    lower = source.pipeline.do_lower_case

    torch.manual_seed(config.seed + processes.rank)
    model = SentenceModel(encoder, source.pipeline.pooling).train()
    wrapped = DistributedDataParallel(model) if processes.distributed else model
    no_sync = wrapped.no_sync if processes.distributed else contextlib.nullcontext
    optimizer = _optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer,
                                                  warmup_linear(config.warmup_steps, total_steps))
    start_step = 0
    if resume_from is not None:
        state = checkpoints.load_state(resume_from)
        if state["fingerprint"] != fingerprint:
            raise InputError(f"the run in {output} was started with other data or settings "
                             f"({state['fingerprint']}); resume it with the same --data, "
                             f"--batch-size, --seed and step count.")
        encoder.load_state_dict(unwrap_encoder(load_model(resume_from, device=device)).state_dict())
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if len(state["rng"]) == processes.world_size:
            _set_rng_state(state["rng"][processes.rank], device)
        else:  # another process count: every rank starts a fresh, reproducible stream
            torch.manual_seed(config.seed + state["step"] * 7919 + processes.rank)
        start_step = state["step"]
    processes.barrier()  # every rank has checked the output directory before rank 0 writes to it
    if processes.main:
        output.mkdir(parents=True, exist_ok=True)
        checkpoints.remove_temporaries(output)
    log = _Log(output / checkpoints.LOG_FILE, processes.main,
               start_step if resume_from is not None else None)
    result = TrainResult(output, total_steps, processes.main)

    def run_evaluation(step: int) -> None:
        if held_out is None or not processes.main:
            return
        anchors, positives = held_out.anchors, held_out.positives
        if lower:
            anchors, positives = [t.lower() for t in anchors], [t.lower() for t in positives]
        metrics = evaluate(model, tokenizer, anchors, positives, device)
        record = {"step": step, "eval_recall_at_1": metrics.recall_at_1, "eval_mrr": metrics.mrr,
                  "eval_size": metrics.size}
        result.evaluations.append(record)
        log.write(record)

    def save(step: int) -> Path | None:
        rng = _gather_rng(processes)
        saved = None
        if processes.main:
            state = {"step": step, "fingerprint": fingerprint, "rng": rng,
                     "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                     "config": json.dumps(config.as_dict())}
            saved = checkpoints.save_checkpoint(output, step, encoder, source, state,
                                                config.keep_checkpoints)
        processes.barrier()
        return saved

    if start_step == 0:
        run_evaluation(0)
    parameters = [p for p in model.parameters() if p.requires_grad]
    bar = tqdm(total=total_steps, initial=start_step, desc="train", unit="step",
               disable=not (config.progress and processes.main))
    for step in range(start_step, total_steps):
        batch = schedule.batch(step)
        anchors, positives, negatives = files[batch.file].take(
            batch.shard(processes.rank, processes.world_size))
        texts = anchors + positives + (negatives or [])
        tokens = to_device(tokenizer([t.lower() for t in texts] if lower else texts), device)
        count = len(anchors)

        def loss_of(embeddings: torch.Tensor) -> torch.Tensor:
            gathered = distributed.gather_with_grad(embeddings[count:], processes)
            positives_all = gathered.view(processes.world_size, -1, gathered.shape[-1])
            negatives_all = None
            if negatives is not None:
                negatives_all = positives_all[:, count:].reshape(-1, gathered.shape[-1])
            positives_all = positives_all[:, :count].reshape(-1, gathered.shape[-1])
            return in_batch_negatives_loss(embeddings[:count], positives_all, negatives_all,
                                           config.scale, first_label=processes.rank * count)

        started = time.perf_counter()
        learning_rate = scheduler.get_last_lr()[0]
        loss = gradcache.backward(wrapped, tokens, loss_of, config.chunk_size, no_sync)
        grad_norm = torch.nn.utils.clip_grad_norm_(parameters, config.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        elapsed = time.perf_counter() - started
        mean_loss = distributed.sum_over_ranks(float(loss), processes) / processes.world_size
        token_count = distributed.sum_over_ranks(float(tokens.attention_mask.sum()), processes)
        record = {"step": step + 1, "loss": mean_loss, "lr": learning_rate,
                  "grad_norm": float(grad_norm), "tokens_per_s": token_count / elapsed,
                  "epoch": step // schedule.steps_per_epoch}
        result.records.append(record)
        if (step + 1) % config.log_every == 0:
            log.write(record)
        bar.update(1)
        bar.set_postfix(loss=f"{mean_loss:.4f}", lr=f"{learning_rate:.2e}")
        if on_step is not None:
            on_step(step + 1, record)
        last = step + 1 == total_steps
        if config.eval_every and (step + 1) % config.eval_every == 0 and not last:
            run_evaluation(step + 1)
        if config.save_every and (step + 1) % config.save_every == 0 and not last:
            save(step + 1)
    bar.close()
    if start_step < total_steps:
        run_evaluation(total_steps)
    final = save(total_steps) if start_step < total_steps else resume_from
    if processes.main:
        checkpoints.publish(final, output)
    processes.barrier()
    return result
