"""torchrun / DistributedDataParallel: process group from the environment, rank-0 helpers.

``torchrun --nproc-per-node N -m nasnetzoo train ...`` sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``; :func:`setup` reads them and starts the process group (NCCL on GPUs, gloo on the
CPU).  Without them everything here degrades to one process and no communication.
"""
from __future__ import annotations

import datetime
import os
import warnings
from dataclasses import dataclass
from typing import Any, Iterator, Optional, Sequence

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_world() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def pick_device(choice: str = "auto", local_rank: int = 0) -> torch.device:
    if choice == "cpu" or (choice == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        from ..recipe_file import RecipeError

        raise RecipeError("device: cuda was asked for, but PyTorch sees no GPU; use device: auto or cpu.")
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


def setup(device_choice: str = "auto") -> DistInfo:
    """Join the process group torchrun describes (if any) and pick this process's device."""
    world = env_world()
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_choice, local_rank)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world,
                                timeout=datetime.timedelta(minutes=30))
    return DistInfo(rank, world, local_rank, device)


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (e.g. the run directory chosen by rank 0)."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


# DDP's own default bucket size: big enough that a step sends a handful of messages, not one per
# tensor (a PC-DARTS supernet has ~1,400 gradient tensors), small enough to keep the copy cheap.
BUCKET_BYTES = 25 * 2**20


def buckets(tensors: Sequence[torch.Tensor], limit: int = BUCKET_BYTES) -> Iterator[list[torch.Tensor]]:
    """Consecutive runs of ``tensors`` of one dtype and device, each at most ``limit`` bytes (a tensor
    larger than that goes alone)."""
    bucket: list[torch.Tensor] = []
    size = 0
    for t in tensors:
        nbytes = t.numel() * t.element_size()
        if bucket and (size + nbytes > limit or t.dtype != bucket[0].dtype or t.device != bucket[0].device):
            yield bucket
            bucket, size = [], 0
        bucket.append(t)
        size += nbytes
    if bucket:
        yield bucket


def all_reduce_mean(tensors: Sequence[Optional[torch.Tensor]], limit: int = BUCKET_BYTES) -> None:
    """Average ``tensors`` in place over the processes of the job, one ``all_reduce`` per bucket of
    :func:`buckets` (the sum is elementwise, so packing changes no value).  ``None`` entries (a
    parameter without a gradient) are skipped; one process: nothing to do."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    world = dist.get_world_size()
    for bucket in buckets([t for t in tensors if t is not None], limit):
        if len(bucket) == 1:
            dist.all_reduce(bucket[0])
            bucket[0].div_(world)
            continue
        flat = torch.cat([t.reshape(-1) for t in bucket])
        dist.all_reduce(flat)
        flat.div_(world)
        offset = 0
        for t in bucket:
            t.copy_(flat[offset:offset + t.numel()].view_as(t))
            offset += t.numel()


def wrap_model(model: nn.Module, info: DistInfo, sync_bn: bool = False) -> nn.Module:
    """DDP around ``model`` when there are several processes (SyncBN first if asked, GPU only)."""
    if not info.distributed:
        return model
    if sync_bn:
        if info.device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        else:
            warnings.warn("sync_bn: PyTorch's SyncBatchNorm runs on GPUs only; training with per-process "
                          "BatchNorm statistics on the CPU.", stacklevel=2)
    ids: Optional[list] = [info.device.index] if info.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def unwrap(model: nn.Module) -> nn.Module:
    """The user's module inside DDP and/or torch.compile wrappers."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model
