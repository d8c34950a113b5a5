"""Everything a pretraining run is told, as one dataclass; the defaults are MosaicBERT's recipe.

MosaicBERT was pretrained with masked-LM only (no next-sentence task) at a 30 % masking rate
(80 % [MASK], 10 % random, 10 % unchanged), sequence length 128, AdamW at peak learning rate 5e-4
with weight decay 1e-5, linear warm-up over 6 % of training then linear decay, dropout 0.1 in the
feed-forward and none in attention (the model's config), and bfloat16 autocast. The optimizer is
the shared loop's AdamW (torch's betas and epsilon; MosaicBERT used 0.9, 0.98 and 1e-6).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError, check_ranges


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _positive(value: float) -> bool:
    return _finite(value) and value > 0


@dataclass(frozen=True)
class MaskingRates:
    """How tokens are corrupted.

    Attributes:
        rate: probability that an ordinary token is selected for prediction, in (0, 1).
        mask, random: of the selected tokens, the share shown as ``[MASK]`` and the share shown
            as a random ordinary token; the rest (``1 - mask - random``) are shown unchanged.
    """

    rate: float = 0.3
    mask: float = 0.8
    random: float = 0.1

    def __post_init__(self) -> None:
        if not _finite(self.rate) or not 0 < self.rate < 1:
            raise InputError(f"the masking rate (--mask-rate) must be a number in (0, 1), got "
                             f"{self.rate!r}.")
        for name in ("mask", "random"):
            if not _finite(getattr(self, name)) or not 0 <= getattr(self, name) <= 1:
                raise InputError(f"masking share {name} must be a number in [0, 1], got "
                                 f"{getattr(self, name)!r}.")
        if self.mask + self.random > 1 + 1e-9:
            raise InputError(f"masking shares mask ({self.mask}) and random ({self.random}) add "
                             f"up to more than 1.")

    @property
    def keep(self) -> float:
        return max(0.0, 1.0 - self.mask - self.random)


@dataclass(frozen=True)
class PretrainConfig:
    """A pretraining run.

    Attributes:
        model: starting masked-LM checkpoint (``init``'s output, or any masked-LM checkpoint the
            package loads, to continue pretraining it, e.g. at a longer length).
        data: corpus files (``.txt``, ``.jsonl``, ``.parquet``), sampled in proportion to size.
        output: run directory (see :mod:`mosaic_encoder.pretraining.model_files`).
        steps: optimizer steps.
        eval_data: held-out corpus, scored at ``max_seq_length`` every ``eval_every`` steps and
            at the end, or None.
        field: the text field (``.jsonl``) or column (``.parquet``).
        masking: the corruption.
        learning_rate, weight_decay: AdamW (biases and LayerNorm weights get no decay).
        warmup_ratio: share of ``steps`` of linear warm-up; then linear decay to 0.
        batch_size: sequences per optimizer step, over all processes.
        accumulation: micro-batches each process splits its share into (gradient accumulation).
        max_seq_length: tokens per packed sequence, [CLS] included.
        max_grad_norm: gradient norm clipping threshold.
        eval_tokens: held-out tokens scored per evaluation.
        eval_every, save_every, log_every: intervals in steps (0 disables the periodic action;
            the end of training always evaluates and saves).
        keep_checkpoints: checkpoints kept in ``output/checkpoints``.
        seed: fixes the data order, the masks and the dropout draws.
        device: ``cpu`` or ``cuda`` (under torchrun each process takes its local GPU).
        attention: attention implementation (``auto``, ``sdpa``, ``triton``).
        resume: continue from the newest checkpoint in ``output``.
        progress: show a tqdm progress bar.
    """

    model: Path
    data: tuple[Path, ...]
    output: Path
    steps: int
    eval_data: Path | None = None
    field: str = "text"
    masking: MaskingRates = MaskingRates()
    learning_rate: float = 5e-4
    weight_decay: float = 1e-5
    warmup_ratio: float = 0.06
    batch_size: int = 64
    accumulation: int = 1
    max_seq_length: int = 128
    max_grad_norm: float = 1.0
    eval_tokens: int = 16384
    eval_every: int = 0
    save_every: int = 500
    log_every: int = 1
    keep_checkpoints: int = 1
    seed: int = 0
    device: str = "cpu"
    attention: str = "auto"
    resume: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        check_ranges(self, {
            "steps": self.steps >= 1, "learning_rate": _positive(self.learning_rate),
            "weight_decay": _finite(self.weight_decay) and self.weight_decay >= 0,
            "warmup_ratio": _finite(self.warmup_ratio) and 0 <= self.warmup_ratio < 1,
            "batch_size": self.batch_size >= 1, "accumulation": self.accumulation >= 1,
            "max_seq_length": self.max_seq_length >= 2,
            "max_grad_norm": _positive(self.max_grad_norm),
            "eval_tokens": self.eval_tokens >= 1, "eval_every": self.eval_every >= 0,
            "save_every": self.save_every >= 0, "log_every": self.log_every >= 1,
            "keep_checkpoints": self.keep_checkpoints >= 1}, "pretraining")
        if not self.data:
            raise InputError("pretraining needs at least one corpus file.")

    @property
    def warmup_steps(self) -> int:
        return round(self.warmup_ratio * self.steps)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready values (paths as strings)."""
        values = asdict(self)
        return {k: (str(v) if isinstance(v, Path) else [str(p) for p in v]
                    if isinstance(v, tuple) else v) for k, v in values.items()}

