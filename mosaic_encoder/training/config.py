"""Everything a training run is told, as one dataclass; the defaults are the model card's.

lodestone-base-4096-v1 was trained with sentence-transformers' ``fit()`` defaults: AdamW at learning
rate 2e-5 with weight decay 0.01, 500 linear warm-up steps then linear decay to zero, batch size
16, maximum sequence length 2048, gradient norm clipped at 1, and MultipleNegativesRankingLoss with
scale 20.

Nothing here imports torch (the ``train`` command's parser reads its defaults from here).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..dtype_names import canonical_dtype
from ..errors import InputError, check_ranges

if TYPE_CHECKING:
    import torch

    from .loop import LoopSettings

DTYPES = ("auto", "bfloat16", "float32")  # bf16 and fp32 spell the same
LOSSES = ("mnrl", "symmetric")  # see .loss
METRICS = ("mrr", "recall_at_1")


@dataclass(frozen=True)
class TrainConfig:
    """A training run.

    Attributes:
        model: starting checkpoint directory (sentence-transformers layout or a bare checkpoint).
        data: training files (``.jsonl``/``.parquet`` pairs or triplets).
        output: run directory (see :mod:`mosaic_encoder.training.run_dir`).
        eval_data: held-out pairs for recall@1/MRR, or None.
        learning_rate, weight_decay: AdamW settings (biases and LayerNorm weights get no decay).
        warmup_steps: linear warm-up from 0; afterwards linear decay to 0 at the last step.
        batch_size: examples per global batch, across all processes.
        max_seq_length: longer texts are truncated (special tokens included); a classic checkpoint
            is further capped at its ``max_position_embeddings``.
        scale: multiplies cosine similarities in the loss.
        max_grad_norm: gradient norm clipping threshold.
        epochs: passes over the data; ``steps`` overrides the resulting step count when given.
        chunk_size: gradient-cache chunk (texts per forward pass), None for plain backprop.
        eval_every, save_every, log_every: intervals in steps (0 disables the periodic action;
            the end of training always evaluates and saves).
        keep_checkpoints: checkpoints kept in ``output/checkpoints``.
        seed: fixes initial RNG state and the data order.
        device: ``cpu`` or ``cuda`` (under torchrun each process takes its local GPU).
        attention: attention implementation (``auto``, ``sdpa``, ``triton``).
        resume: continue from the newest checkpoint in ``output``.
        progress: show a tqdm progress bar.
        no_duplicates: no text twice in a batch (see :mod:`.data`).
        loss: ``mnrl`` or ``symmetric`` (see :mod:`.loss`).
        matryoshka_dims: train (and evaluate) the embeddings cut to each of these dimensions too;
            () for the whole embeddings only.
        query_prompt, document_prompt: prepended to anchors, and to positives and negatives, in
            training and evaluation; saved as the checkpoint's ``query``/``document`` prompts.
        gradient_checkpointing: recompute each encoder layer's activations in the backward pass
            instead of keeping them.
        keep_best: ``mrr`` or ``recall_at_1``: keep the model of the best held-out evaluation in
            ``output/best`` (needs ``eval_data``).
        dtype: ``bfloat16`` (autocast, float32 master weights), ``float32``, or ``auto``:
            bfloat16 on CUDA, float32 on CPU (``bf16`` and ``fp32`` spell the same).
        tensorboard: log to ``output/tensorboard`` too when the tensorboard package is present.
    """

    model: Path
    data: tuple[Path, ...]
    output: Path
    eval_data: Path | None = None
    learning_rate: float = 2e-5
    weight_decay: float = 0.01
    warmup_steps: int = 500
    batch_size: int = 16
    max_seq_length: int = 2048
    scale: float = 20.0
    max_grad_norm: float = 1.0
    epochs: int = 1
    steps: int | None = None
    chunk_size: int | None = None
    eval_every: int = 0
    save_every: int = 500
    log_every: int = 1
    keep_checkpoints: int = 1
    seed: int = 0
    device: str = "cpu"
    attention: str = "auto"
    resume: bool = False
    progress: bool = True
    no_duplicates: bool = True
    loss: str = "mnrl"
    matryoshka_dims: tuple[int, ...] = ()
    query_prompt: str | None = None
    document_prompt: str | None = None
    gradient_checkpointing: bool = False
    keep_best: str | None = None
    dtype: str = "auto"
    tensorboard: bool = True

    def __post_init__(self):
        check_ranges(self, {
            "batch_size": self.batch_size >= 2, "max_seq_length": self.max_seq_length >= 2,
            "scale": 0 < self.scale < math.inf, "epochs": self.epochs >= 1,
            "steps": self.steps is None or self.steps >= 1,
            "chunk_size": self.chunk_size is None or self.chunk_size >= 1,
            "loss": self.loss in LOSSES,
            "matryoshka_dims": all(d >= 1 for d in self.matryoshka_dims)
            and len(set(self.matryoshka_dims)) == len(self.matryoshka_dims),
            "keep_best": self.keep_best is None or self.keep_best in METRICS,
            "dtype": (canonical_dtype(self.dtype) or self.dtype) in DTYPES})
        self.loop  # checks the loop's settings
        if not self.data:
            raise InputError("training needs at least one data file.")
        if self.keep_best is not None and self.eval_data is None:
            raise InputError("--keep-best needs held-out pairs to evaluate (--eval-data).")

    @property
    def loop(self) -> LoopSettings:
        """The settings that :mod:`.loop` owns."""
        from .loop import LoopSettings

        return LoopSettings(
            output=self.output, learning_rate=self.learning_rate, weight_decay=self.weight_decay,
            warmup_steps=self.warmup_steps, max_grad_norm=self.max_grad_norm,
            eval_every=self.eval_every, save_every=self.save_every, log_every=self.log_every,
            keep_checkpoints=self.keep_checkpoints, seed=self.seed, device=self.device,
            resume=self.resume, progress=self.progress, tensorboard=self.tensorboard,
            keep_best=None if self.keep_best is None else f"eval_{self.keep_best}")

    def autocast(self, device: torch.device) -> torch.dtype | None:
        """The autocast dtype on ``device``: None for float32."""
        import torch

        name = canonical_dtype(self.dtype) or self.dtype
        if name == "bfloat16" or (name == "auto" and device.type == "cuda"):
            return torch.bfloat16
        return None
