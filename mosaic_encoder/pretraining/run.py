"""``pretrain``: a :class:`~.config.PretrainConfig` run by the shared training loop.

The loop (:mod:`mosaic_encoder.training.loop`) owns the optimizer, schedule, clipping, DDP,
checkpoints, resume and logging for every kind of training; masked-LM pretraining supplies its
:class:`~.task.MaskedLMTask`.
"""

from __future__ import annotations

from ..training.loop import LoopSettings, StepCallback, TrainResult, run
from .config import PretrainConfig
from .task import MaskedLMTask


def loop_settings(config: PretrainConfig) -> LoopSettings:
    """The loop's share of ``config``."""
    return LoopSettings(
        output=config.output, learning_rate=config.learning_rate,
        weight_decay=config.weight_decay, warmup_steps=config.warmup_steps,
        max_grad_norm=config.max_grad_norm, eval_every=config.eval_every,
        save_every=config.save_every, log_every=config.log_every,
        keep_checkpoints=config.keep_checkpoints, seed=config.seed, device=config.device,
        resume=config.resume, progress=config.progress)


def pretrain(config: PretrainConfig, on_step: StepCallback | None = None) -> TrainResult:
    """Run ``config`` in this process (one of several under torchrun).

    Args:
        config: the run.
        on_step: called after every optimizer step with (steps taken, the step's record).
    Returns:
        the run's records (on every rank; files are written by rank 0 only).
    Raises:
        InputError, CheckpointError, ConfigError: bad corpus, settings, starting checkpoint or
            output directory, before anything is written.
        TrainingError: a non-finite loss or gradient norm.
    """
    return run(loop_settings(config), lambda processes: MaskedLMTask(config, processes.device),
               on_step)
