"""Distributed helpers: the trainer runs unchanged as one process or under `torchrun` (DDP).

`init_distributed` reads torchrun's environment (WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR/PORT);
the backend is NCCL on CUDA and gloo on CPU. Only rank 0 writes files (checkpoints, metrics,
plots); every rank holds the same model, optimizer and sampler state, so rank 0's checkpoint
describes them all (per-rank RNG states are gathered into it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


@dataclass
class DistContext:
    """Rank/world of this process and the device it trains on."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def all_reduce_max(self, values: list[float]) -> list[float]:
        """Element-wise max over ranks (rank-0 decisions such as 'stop now' reach every rank)."""
        if not self.distributed:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self._comm_device())
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return t.tolist()

    def all_reduce_mean(self, values: dict[str, float]) -> dict[str, float]:
        """Mean of scalar metrics over ranks (keys must agree on every rank)."""
        if not self.distributed or not values:
            return values
        keys = sorted(values)
        t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=self._comm_device())
        dist.all_reduce(t)
        return {k: v / self.world for k, v in zip(keys, t.tolist())}

    def all_gather(self, x: torch.Tensor) -> torch.Tensor:
        """Concatenate equal-shaped tensors of every rank along dim 0 (rank order)."""
        if not self.distributed:
            return x
        parts = [torch.empty_like(x) for _ in range(self.world)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    def gather_objects(self, obj: Any) -> list[Any]:
        """Picklable objects of every rank, in rank order, on every rank."""
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's object on every rank."""
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def wrap(self, module: nn.Module, find_unused: bool = False) -> nn.Module:
        """DDP-wrap a module with trainable parameters when distributed; otherwise return it."""
        if not self.distributed or not any(p.requires_grad for p in module.parameters()):
            return module
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids, find_unused_parameters=find_unused)

    def _comm_device(self) -> torch.device:
        return self.device if self.device.type == "cuda" else torch.device("cpu")


def init_distributed(device: torch.device) -> DistContext:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); pick the local device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext(device=device)
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistContext(rank=rank, world=world, local_rank=local, device=device)


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def unwrap(module: nn.Module) -> nn.Module:
    return module.module if isinstance(module, DistributedDataParallel) else module
