"""Activation memory of a training step, counted tensor by tensor (exact on any device).

A ``TorchDispatchMode`` sees every tensor an operator creates, forward, backward and recomputation
alike; each new storage is counted until it is freed. Two numbers per step:

* ``saved_bytes``: what the forward pass leaves alive for the backward pass (the activations);
* ``peak_bytes``: the most bytes alive at once during forward plus backward, above what was alive
  before the step (activations, transient buffers such as attention score chunks, and gradients).

Command line::

    python -m mosaic_encoder.training.memory --model DIR --lengths 512 1024 2048 4096
"""

from __future__ import annotations

import argparse
import json
import sys
import weakref
from dataclasses import asdict, dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from ..arguments import CommandParser, positive_int
from ..checkpoint import CheckpointDir
from ..loading import load_model
from ..models import unwrap_encoder
from .model import SentenceModel


class _LiveBytes(TorchDispatchMode):
    """Bytes of the storages created inside the mode and still alive; and their maximum."""

    def __init__(self):
        super().__init__()
        self.sizes: dict[int, int] = {}
        self.current = 0
        self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_leaves(out):
            if isinstance(tensor, torch.Tensor):
                storage = tensor.untyped_storage()
                key, size = storage.data_ptr(), storage.nbytes()
                if size and key not in self.sizes:
                    self.sizes[key] = size
                    self.current += size
                    self.peak = max(self.peak, self.current)
                    weakref.finalize(storage, self._free, key)
        return out

    def _free(self, key: int) -> None:
        self.current -= self.sizes.pop(key, 0)


@dataclass(frozen=True)
class StepMemory:
    """One measured training step: ``batch`` sequences of ``length`` tokens, bytes as above."""

    length: int
    batch: int
    saved_bytes: int
    peak_bytes: int


def step_memory(model: SentenceModel, length: int, batch: int = 1, seed: int = 0) -> StepMemory:
    """Measure forward + backward of ``batch`` random sequences of ``length`` tokens.

    The model's gradients are cleared before and after.
    """
    generator = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    vocab = model.encoder.config.vocab_size
    input_ids = torch.randint(1000, vocab, (batch, length), generator=generator).to(device)
    mask = torch.ones_like(input_ids)
    model.zero_grad(set_to_none=True)
    tracker = _LiveBytes()
    with tracker:
        embeddings = model(input_ids, mask, torch.zeros_like(input_ids))
        saved = tracker.current
        embeddings.square().sum().backward()
        del embeddings
    model.zero_grad(set_to_none=True)
    return StepMemory(length, batch, saved, tracker.peak)


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m mosaic_encoder.training.memory``."""
    parser = CommandParser(prog="python -m mosaic_encoder.training.memory",
                           description="Activation memory of one training step per sequence "
                                       "length, one JSON object per length.")
    parser.add_argument("--model", required=True, metavar="DIR", help="checkpoint directory")
    parser.add_argument("--lengths", type=positive_int, nargs="+", default=[512, 1024, 2048, 4096],
                        metavar="N", help="tokens per sequence, one step each")
    parser.add_argument("--batch", type=positive_int, default=1, metavar="N",
                        help="sequences per step")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    checkpoint = CheckpointDir.open(args.model)
    encoder = unwrap_encoder(load_model(checkpoint, device=args.device))
    autocast = torch.bfloat16 if torch.device(args.device).type == "cuda" else None  # as train
    model = SentenceModel(encoder, checkpoint.pipeline.pooling, autocast).train()
    for length in args.lengths:
        print(json.dumps(asdict(step_memory(model, length, args.batch))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
