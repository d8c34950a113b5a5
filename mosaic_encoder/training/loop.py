"""The training loop, generic over what is trained: set-up, one :meth:`Loop.train_step`, a plain loop.

What differs between contrastive fine-tuning (:mod:`.contrastive`) and masked-LM pretraining is a
:class:`Task`::

    class Task(Protocol):
        model: nn.Module       # the trainable module; the loop wraps it in DistributedDataParallel
        fingerprint: dict      # JSON-ready settings that a resumed run must share
        steps: int             # optimizer steps of the whole run
        def batch(self, step, rank, world_size) -> Any            # this rank's share, pure in step
        def backward(self, wrapped, batch, no_sync) -> (float, int)  # loss, tokens of this rank
        def evaluate(self, step) -> dict | None                   # held-out metrics (rank 0)
        def save_model(self, directory) -> None                   # a checkpoint's model files
        def load_model(self, directory) -> None                   # weights back from save_model's

``backward`` runs forward and backward passes and accumulates ``.grad`` (a gradient cache or
gradient accumulation lives inside it); every call but its last ``backward`` runs under
``no_sync()`` so that DDP all-reduces the gradients once per step.

The loop owns the rest, identical for every task:

- AdamW, with no weight decay on the 1-d parameters (biases, LayerNorm weights); linear warm-up
  over ``warmup_steps`` then linear decay to zero at the last step; gradient-norm clipping;
- a stop at the first non-finite loss or gradient norm, before the optimizer applies it;
- checkpoints (:mod:`.run_dir`) holding the model, optimizer and every rank's RNG state, so that
  a resumed run continues bit for bit where an uninterrupted run would be; a finished run resumed
  with more steps continues with its schedule stretched to the new end, and any other change of
  settings is refused, naming the setting;
- with ``keep_best``, the model of the best evaluation so far in ``best/``;
- ``log.jsonl``, TensorBoard event files (``tensorboard/``, when the ``tensorboard`` package is
  installed), the tqdm bar and the ``on_step`` callback;
- torchrun processes: DDP, every rank computing its own share, rank 0 alone writing files.

A run that fails before its first checkpoint leaves no output behind; one that fails later keeps
its checkpoints and the newest published model, ready for ``--resume``.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ContextManager, Protocol

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from ..atomic import atomic_write
from ..errors import CheckpointError, InputError, TrainingError, check_ranges
from . import distributed, run_dir
from .distributed import Processes
from .rng import SEED_LIMIT, derived_seed, rng_state, set_rng_state

StepCallback = Callable[[int, dict[str, Any]], None]


class Task(Protocol):
    """What the loop trains; see the module docstring."""

    model: nn.Module
    fingerprint: dict[str, Any]
    steps: int

    def batch(self, step: int, rank: int, world_size: int) -> Any: ...

    def backward(self, wrapped: nn.Module, batch: Any,
                 no_sync: Callable[[], ContextManager]) -> tuple[float, int]: ...

    def evaluate(self, step: int) -> dict[str, Any] | None: ...

    def save_model(self, directory: Path) -> None: ...

    def load_model(self, directory: Path) -> None: ...


@dataclass(frozen=True)
class LoopSettings:
    """The settings the loop owns.

    Attributes:
        output: run directory (see :mod:`.run_dir`).
        learning_rate, weight_decay: AdamW settings (1-d parameters get no decay).
        warmup_steps: linear warm-up from 0; afterwards linear decay to 0 at the last step.
        max_grad_norm: gradient norm clipping threshold.
        eval_every, save_every, log_every: intervals in steps (0 disables the periodic action;
            the end of training always evaluates and saves).
        keep_checkpoints: checkpoints kept in ``output/checkpoints``.
        seed: fixes the initial RNG state of every rank (rank ``r`` draws from its own stream).
        device: ``cpu`` or ``cuda`` (under torchrun each process takes its local GPU).
        resume: continue from the newest checkpoint in ``output``.
        progress: show a tqdm progress bar.
        keep_best: a metric the task's evaluation reports (higher is better): the model of its
            best evaluation is kept in ``output/best``; None keeps none.
        tensorboard: also log to ``output/tensorboard`` when the tensorboard package is present.
    """

    output: Path
    learning_rate: float
    weight_decay: float = 0.01
    warmup_steps: int = 0
    max_grad_norm: float = 1.0
    eval_every: int = 0
    save_every: int = 500
    log_every: int = 1
    keep_checkpoints: int = 1
    seed: int = 0
    device: str = "cpu"
    resume: bool = False
    progress: bool = True
    keep_best: str | None = None
    tensorboard: bool = True

    def __post_init__(self):
        check_ranges(self, {
            "learning_rate": 0 < self.learning_rate < math.inf,
            "weight_decay": 0 <= self.weight_decay < math.inf,
            "warmup_steps": self.warmup_steps >= 0,
            "max_grad_norm": 0 < self.max_grad_norm < math.inf,
            "eval_every": self.eval_every >= 0, "save_every": self.save_every >= 0,
            "log_every": self.log_every >= 1, "keep_checkpoints": self.keep_checkpoints >= 1,
            "seed": 0 <= self.seed < SEED_LIMIT})


# The end-of-run loss compares the mean of the first and of the last steps run, at most this many
# each: one step's loss is one batch's, and batches differ more than a short run's progress.
LOSS_WINDOW = 50


@dataclass
class TrainResult:
    """What a run did: its output, its steps (``steps`` in all, this process ran those after
    ``first_step``; 0 unless resumed), whether this is rank 0, the records of the steps it ran
    and every evaluation of the run (as logged; a resumed run's earlier ones included)."""

    output: Path
    steps: int
    main: bool = True
    records: list[dict[str, Any]] = field(default_factory=list)
    evaluations: list[dict[str, Any]] = field(default_factory=list)
    first_step: int = 0

    def summary(self, verb: str, loss_label: str, held_out: str | None = None) -> str:
        """One line for the command's end: what ran (``"<verb> N steps -> OUTPUT"``, with the
        steps and the resumed checkpoint on resume), the mean ``loss_label`` of the first and of
        the last steps run (:data:`LOSS_WINDOW` each at most, never overlapping), then
        ``held_out`` when given."""
        ran = len(self.records)
        if not self.first_step:
            parts = [f"{verb} {ran} steps -> {self.output}"]
        elif not ran:
            parts = [f"{verb} 0 steps: the run in {self.output} had already reached step "
                     f"{self.first_step} of {self.steps}"]
        else:
            parts = [f"{verb} {ran} steps ({self.first_step + 1}-{self.steps} of {self.steps}, "
                     f"resumed from step {self.first_step}) -> {self.output}"]
        if ran == 1:
            parts.append(f"{loss_label} {self.records[0]['loss']:.4f} (one step)")
        elif ran > 1:
            window = min(LOSS_WINDOW, ran // 2)
            first, last = self.records[:window], self.records[-window:]
            parts.append(f"mean {loss_label} of steps {_span(first)} {_mean_loss(first):.4f} -> "
                         f"of steps {_span(last)} {_mean_loss(last):.4f}")
        if held_out:
            parts.append(held_out)
        return "; ".join(parts)


def _span(records: list[dict[str, Any]]) -> str:
    first, last = records[0]["step"], records[-1]["step"]
    return str(first) if first == last else f"{first}-{last}"


def _mean_loss(records: list[dict[str, Any]]) -> float:
    return sum(r["loss"] for r in records) / len(records)


def warmup_linear(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """Learning-rate factor: 0 -> 1 over ``warmup_steps``, then 1 -> 0 at ``total_steps``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / max(1, warmup_steps)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return factor


def run(settings: LoopSettings, build: Callable[[Processes], Task],
        on_step: StepCallback | None = None) -> TrainResult:
    """Train the task that ``build`` makes for this process (one of several under torchrun).

    Args:
        settings: the loop's settings.
        build: makes the task on this process's device; it reads data and the starting model and
            raises on bad input before anything is written.
        on_step: called after every optimizer step with (steps taken, the step's record).
    Returns:
        the run's records (on every rank; files are written by rank 0 only).
    Raises:
        InputError, CheckpointError: bad data, settings, starting checkpoint, output directory or
            resume state, before anything is written; or a failed write.
        TrainingError: a non-finite loss or gradient norm.
    """
    processes = distributed.start(settings.device)
    try:
        resume_from = run_dir.check_output(settings.output, settings.resume)
        loop = Loop(settings, build(processes), processes, resume_from)
        return loop.train(on_step)
    finally:
        distributed.stop(processes)


class Loop:
    """One run: set up in ``__init__``, :meth:`train_step` per step, :meth:`train` for the run."""

    def __init__(self, settings: LoopSettings, task: Task, processes: Processes,
                 resume_from: Path | None):
        self.settings, self.task, self.processes = settings, task, processes
        self.output = settings.output
        torch.manual_seed(derived_seed(settings.seed, processes.rank))
        self.wrapped = DistributedDataParallel(task.model) if processes.distributed \
            else task.model
        self.no_sync = self.wrapped.no_sync if processes.distributed else contextlib.nullcontext
        self.parameters = [p for p in task.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            [{"params": [p for p in self.parameters if p.dim() >= 2],
              "weight_decay": settings.weight_decay},
             {"params": [p for p in self.parameters if p.dim() < 2], "weight_decay": 0.0}],
            lr=settings.learning_rate)
        self.schedule = warmup_linear(settings.warmup_steps, task.steps)
        self.fingerprint = {"task": task.fingerprint, "seed": settings.seed,
                            "learning_rate": settings.learning_rate,
                            "weight_decay": settings.weight_decay,
                            "warmup_steps": settings.warmup_steps,
                            "max_grad_norm": settings.max_grad_norm}
        self.best: tuple[int, float] | None = None  # (step, value) of the best evaluation
        self.start_step = 0 if resume_from is None else self._resume(resume_from)
        self.resume_from = resume_from
        self.created = not self.output.exists()
        processes.barrier()  # every rank has checked the output directory before rank 0 writes
        if processes.main:
            run_dir.prepare(self.output, fresh=resume_from is None)
        self.log = _Log(self.output, processes.main and settings.tensorboard,
                        self.start_step if resume_from is not None else None) \
            if processes.main else None
        self.result = TrainResult(self.output, task.steps, processes.main,
                                  first_step=self.start_step)
        if self.log is not None:  # a resumed run's summary compares with its first evaluation
            self.result.evaluations = [r for r in self.log.kept if "loss" not in r]

    def _resume(self, checkpoint: Path) -> int:
        """Restore weights, optimizer, best evaluation and RNG from ``checkpoint``; return its
        step."""
        state = run_dir.load_state(checkpoint)
        path = checkpoint / run_dir.STATE_DIR / "state.pt"
        for key, kind in (("fingerprint", dict), ("step", int), ("steps", int), ("rng", list),
                          ("optimizer", dict)):
            if not isinstance(state.get(key), kind):
                raise CheckpointError(f"training state {path} has no valid {key!r} entry.")
        difference = _first_difference(state["fingerprint"], self.fingerprint)
        if difference is not None:
            name, before, now = difference
            raise InputError(f"the run in {self.output} was started with {name} {before}, not "
                             f"{now}; resume it with the same settings (a change would make it "
                             f"differ from an uninterrupted run).")
        step, steps = state["step"], state["steps"]
        if self.task.steps != steps and not (step == steps < self.task.steps):
            raise InputError(f"the run in {self.output} has {steps} steps and its newest "
                             f"checkpoint is at step {step}; resume it with {steps} steps, or "
                             f"with more once it has finished.")
        self.task.load_model(checkpoint)
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            _check_moments(self.optimizer)
        except (ValueError, KeyError, TypeError, RuntimeError, IndexError) as err:
            raise CheckpointError(f"training state {path} does not fit this model's optimizer "
                                  f"({str(err).splitlines()[0][:200]}).") from None
        best = state.get("best")
        if isinstance(best, list) and len(best) == 2:
            self.best = (int(best[0]), float(best[1]))
        ranks = state["rng"]
        if len(ranks) == self.processes.world_size:
            try:
                set_rng_state(ranks[self.processes.rank], self.processes.device)
            except (KeyError, TypeError, RuntimeError) as err:
                raise CheckpointError(f"training state {path} holds an unusable RNG state "
                                      f"({str(err).splitlines()[0][:200]}).") from None
        else:  # another process count: every rank starts a fresh, reproducible stream
            torch.manual_seed(derived_seed(self.settings.seed, step, self.processes.rank))
        return step

    def train_step(self, step: int) -> dict[str, Any]:
        """One optimizer step on the batch of ``step`` (0-based); returns its record.

        Raises:
            TrainingError: the loss or the gradient norm is not finite (no update is applied).
        """
        batch = self.task.batch(step, self.processes.rank, self.processes.world_size)
        self.task.model.train()  # whatever evaluation left it in
        started = time.perf_counter()
        learning_rate = self.settings.learning_rate * self.schedule(step)
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate
        loss, tokens = self.task.backward(self.wrapped, batch, self.no_sync)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.parameters,
                                                         self.settings.max_grad_norm))
        mean_loss = distributed.sum_over_ranks(loss, self.processes) / self.processes.world_size
        if not (math.isfinite(mean_loss) and math.isfinite(grad_norm)):
            raise TrainingError(f"training stopped at step {step + 1}: the loss is {mean_loss:g} "
                                f"and the gradient norm {grad_norm:g} (learning rate "
                                f"{learning_rate:g}); {self._kept()}")
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        elapsed = time.perf_counter() - started
        token_count = distributed.sum_over_ranks(float(tokens), self.processes)
        return {"step": step + 1, "loss": mean_loss, "lr": learning_rate, "grad_norm": grad_norm,
                "tokens_per_s": token_count / elapsed}

    def train(self, on_step: StepCallback | None = None) -> TrainResult:
        """Run the steps from the start (or resumed) step to the end; publish the final model."""
        settings, total = self.settings, self.task.steps
        try:
            if self.start_step == 0:
                self.evaluate(0)
            bar = tqdm(total=total, initial=self.start_step, desc="train", unit="step",
                       disable=not (settings.progress and self.processes.main))
            for step in range(self.start_step, total):
                record = self.train_step(step)
                self.result.records.append(record)
                if record["step"] % settings.log_every == 0 and self.log is not None:
                    self.log.write(record)
                bar.update(1)
                bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}")
                if on_step is not None:
                    on_step(step + 1, record)
                if record["step"] < total:
                    if settings.eval_every and record["step"] % settings.eval_every == 0:
                        self.evaluate(record["step"])
                    if settings.save_every and record["step"] % settings.save_every == 0:
                        self.save(record["step"])
            bar.close()
            final = self.resume_from
            if self.start_step < total:
                self.evaluate(total)
                final = self.save(total)
            if self.processes.main:
                run_dir.publish(final, self.output)
                self.log.close()
            self.processes.barrier()
        except BaseException:
            self._clean_up_failure()
            raise
        return self.result

    def evaluate(self, step: int) -> None:
        """Held-out metrics of the task at ``step``, logged by rank 0."""
        if not self.processes.main:
            return
        metrics = self.task.evaluate(step)
        if metrics is None:
            return
        record = {"step": step, **metrics}
        self.result.evaluations.append(record)
        self.log.write(record)
        metric = self.settings.keep_best
        if metric is not None:
            if not isinstance(metrics.get(metric), (int, float)):
                raise InputError(f"--keep-best {metric}: the evaluation reports no such metric "
                                 f"(it reports {', '.join(sorted(metrics))}).")
            if self.best is None or metrics[metric] > self.best[1]:
                self.best = (step, float(metrics[metric]))
                run_dir.save_best(self.output, self.task.save_model,
                                  {"step": step, metric: metrics[metric]})

    def save(self, step: int) -> Path | None:
        """Write checkpoint ``step`` (rank 0) with every rank's RNG state; return it on rank 0."""
        ranks = self._gather_rng()
        saved = None
        if self.processes.main:
            state = {"step": step, "steps": self.task.steps, "fingerprint": self.fingerprint,
                     "rng": ranks, "optimizer": self.optimizer.state_dict(),
                     "best": list(self.best) if self.best is not None else None}
            saved = run_dir.save_checkpoint(self.output, step, self.task.save_model, state,
                                            self.settings.keep_checkpoints)
        self.processes.barrier()
        return saved

    def _gather_rng(self) -> list[dict[str, torch.Tensor]]:
        state = rng_state(self.processes.device)
        if not self.processes.distributed:
            return [state]
        states: list[Any] = [None] * self.processes.world_size
        dist.all_gather_object(states, {k: v.cpu() for k, v in state.items()})
        return states

    def _kept(self) -> str:
        """What a failed run leaves behind, as the end of its error sentence."""
        found = run_dir.checkpoint_dirs(self.output)
        if not found:
            return f"nothing was saved in {self.output}."
        return f"the last good checkpoint, {found[-1]}, is kept."

    def _clean_up_failure(self) -> None:
        """After a failure: a run without a checkpoint leaves nothing; otherwise the newest
        checkpoint is published, so the top of the output is the last good model."""
        if not self.processes.main:
            return
        self.log.close()
        found = run_dir.checkpoint_dirs(self.output)
        with contextlib.suppress(OSError, CheckpointError):
            if found:
                run_dir.publish(found[-1], self.output)
            elif self.created:
                shutil.rmtree(self.output)
            else:
                run_dir.clear(self.output)


def _check_moments(optimizer: torch.optim.Optimizer) -> None:
    """ValueError unless every per-parameter tensor of a loaded state has its parameter's shape
    (``load_state_dict`` checks only the number of parameters)."""
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            for name, value in optimizer.state.get(parameter, {}).items():
                if isinstance(value, torch.Tensor) and value.dim() and \
                        value.shape != parameter.shape:
                    raise ValueError(f"{name} of shape {tuple(value.shape)} for a parameter of "
                                     f"shape {tuple(parameter.shape)}")


class _Log:
    """``output/log.jsonl`` and, when the tensorboard package is present, TensorBoard events in
    ``output/tensorboard``; rank 0 only. A resumed run first drops records past its step."""

    def __init__(self, output: Path, tensorboard: bool, resumed_step: int | None):
        self.path = output / run_dir.LOG_FILE
        self.kept: list[dict[str, Any]] = []  # the records a resumed run keeps
        if resumed_step is not None and self.path.is_file():
            self.kept = [r for r in run_dir.read_log(self.path) if r["step"] <= resumed_step]
            data = "".join(json.dumps(r) + "\n" for r in self.kept).encode("utf-8")
            atomic_write(self.path, lambda stream: stream.write(data))
        self.events = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                return
            self.events = SummaryWriter(str(output / run_dir.TENSORBOARD_DIR),
                                        purge_step=None if resumed_step is None
                                        else resumed_step + 1)

    def write(self, record: dict[str, Any]) -> None:
        try:
            with open(self.path, "a", encoding="utf-8") as stream:
                stream.write(json.dumps(record) + "\n")
        except OSError as err:
            raise CheckpointError(f"cannot write {self.path} ({err.strerror}).") from None
        if self.events is not None:
            for name, value in record.items():
                if name != "step" and isinstance(value, (int, float)):
                    self.events.add_scalar(name, value, record["step"])

    def close(self) -> None:
        if self.events is not None:
            self.events.close()


def _first_difference(saved: Any, current: Any, name: str = "") -> tuple[str, Any, Any] | None:
    """(setting, saved value, current value) of the first setting that differs, or None."""
    if isinstance(saved, dict) and isinstance(current, dict):
        for key in sorted(set(saved) | set(current)):
            found = _first_difference(saved.get(key), current.get(key), key)
            if found is not None:
                return found
        return None
    return None if saved == current else (name or "settings", saved, current)
