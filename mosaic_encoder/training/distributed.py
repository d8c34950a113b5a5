"""Processes of a torchrun launch: who we are, and gathering embeddings with their gradients.

``torchrun`` sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` (multi-node runs use torchrun's own
``--nnodes``/``--rdzv-*`` flags); without them the run is a single process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import InputError


@dataclass(frozen=True)
class Processes:
    """This process's place in the run.

    Attributes:
        rank: global index of this process, 0 for a single process.
        world_size: number of processes.
        device: where this process computes (``cuda:LOCAL_RANK`` under torchrun with GPUs).
    """

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def start(device: str) -> Processes:
    """Join the torchrun process group when launched by torchrun, else describe one process.

    ``device`` is the requested device type (``cpu`` or ``cuda``); under torchrun with CUDA each
    process takes GPU ``LOCAL_RANK`` and the NCCL backend, on CPU the gloo backend.
    """
    requested = torch.device(device)
    if requested.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {device} was asked for but no CUDA GPU is available.")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Processes(device=requested)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if requested.type == "cuda":
        requested = torch.device("cuda", local_rank)
        torch.cuda.set_device(requested)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if requested.type == "cuda" else "gloo")
    return Processes(rank=rank, world_size=world_size, device=requested)


def stop(processes: Processes) -> None:
    if processes.distributed and dist.is_initialized():
        dist.destroy_process_group()


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sends each rank the summed gradient of its own slice.

    The gradient of a rank's slice is the sum, over every rank's loss, of that loss's gradient
    with respect to the slice: an all-reduce of the full gradient (gloo has no reduce-scatter).
    """

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        ctx.rank, ctx.rows = dist.get_rank(), tensor.shape[0]
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows]


def gather_with_grad(tensor: torch.Tensor, processes: Processes) -> torch.Tensor:
    """(N, D) on each of W ranks -> (W * N, D), rank order; gradients flow back to every rank."""
    return _GatherWithGrad.apply(tensor) if processes.distributed else tensor


def sum_over_ranks(value: float, processes: Processes) -> float:
    """A number summed over all processes (for logging: tokens of the global batch)."""
    if not processes.distributed:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=processes.device)
    dist.all_reduce(tensor)
    return float(tensor)
