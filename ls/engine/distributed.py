"""DistributedDataParallel plumbing, kept out of the Trainer's loop.

``torchrun --nproc_per_node=N ast_film_soft.py --config ...`` sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``;
:func:`init_distributed` turns them into a process group (gloo on CPU, nccl on CUDA). Outside torchrun
everything here degrades to single-process no-ops, so the same code path trains on one CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the job: ``rank`` 0 alone logs and writes checkpoints."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside ``torch.compile`` and DistributedDataParallel / DataParallel wrappers (the model itself
    otherwise): the one whose ``state_dict`` keys are the model's own."""
    model = getattr(model, "_orig_mod", model)  # torch.compile's OptimizedModule
    if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        model = model.module
    return getattr(model, "_orig_mod", model)


def init_distributed(device_type: str = "cpu") -> DistContext:
    """Join the torchrun process group if launched by torchrun; otherwise a single-process context."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistContext()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        # On CUDA, tensors of the small CPU collectives (loss means, NaN flags, gathered outputs) go through gloo
        # and model gradients through nccl; plain "nccl" would reject the CPU tensors.
        backend = "cpu:gloo,cuda:nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank)


def cleanup_distributed(wait_for_peers: bool = False) -> None:
    """Leave the process group. ``wait_for_peers`` (a run that ended normally on every rank) meets the other
    ranks at a barrier first, so that no rank tears down its gloo connections while a peer still uses them;
    an error path leaves at once, since a failed peer would never reach the barrier."""
    if dist.is_initialized():
        if wait_for_peers:
            dist.barrier()
        dist.destroy_process_group()


def current_context() -> DistContext:
    if dist.is_available() and dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    return DistContext()


def wrap_model(model: nn.Module, ctx: DistContext, device: torch.device) -> nn.Module:
    """DDP-wrap on multi-process runs. Unused parameters are allowed: variants ablate metadata parts."""
    if not ctx.enabled:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)


def gather_arrays(arrays: dict[str, np.ndarray], ctx: DistContext) -> dict[str, np.ndarray]:
    """Concatenate per-rank evaluation outputs along axis 0 on every rank (same order: rank 0, 1, ...).

    A DistributedSampler pads the last ranks with repeated items so every rank has equal length; callers
    drop the duplicates with :func:`dedupe_by_index` using the dataset indices they gathered.
    """
    if not ctx.enabled:
        return arrays
    parts: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(parts, arrays)
    return {k: np.concatenate([p[k] for p in parts], axis=0) for k in arrays}


def dedupe_by_index(arrays: dict[str, np.ndarray], key: str = "index") -> dict[str, np.ndarray]:
    """Keep the first occurrence of each dataset index, sorted by index (restores dataset order)."""
    _, first = np.unique(arrays[key], return_index=True)
    return {k: v[first] for k, v in arrays.items()}


def all_reduce_mean(value: float, ctx: DistContext) -> float:
    if not ctx.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t.item()) / ctx.world_size


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


__all__ = [
    "DistContext",
    "all_reduce_mean",
    "any_rank",
    "barrier",
    "cleanup_distributed",
    "current_context",
    "dedupe_by_index",
    "gather_arrays",
    "init_distributed",
    "unwrap",
    "wrap_model",
]


def any_rank(flag: bool, ctx: DistContext) -> bool:
    """True on every rank if ``flag`` is true on any rank (a NaN loss on one rank stops them all)."""
    if not ctx.enabled:
        return flag
    t = torch.tensor([int(flag)])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())
