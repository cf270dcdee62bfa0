"""Several processes (GPUs or machines) through torch.distributed, as launched by torchrun.

`torchrun --nproc_per_node=N -m convkit train ...` sets RANK, WORLD_SIZE and LOCAL_RANK; every process then
walks the same seeded global batches and takes its own slice of each (`shard`), DDP averages the gradients,
and only rank 0 writes the run folder. Without those variables everything here is a no-op.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """This process's place: rank, world size, rank within the machine."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that prints and writes files."""
        return self.rank == 0


def init_distributed(device: str = "auto") -> tuple[DistInfo, torch.device]:
    """Joins the process group torchrun describes (gloo on CPU, nccl on GPUs); picks this process's device.

    Args:
        device: "auto", "cpu", "cuda"... ("auto" and "cuda" become cuda:LOCAL_RANK under torchrun).

    Returns:
        (DistInfo, the device to train on).

    Example:
        >>> info, device = init_distributed("auto")
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", local_rank if world > 1 else torch.cuda.current_device())
    if world <= 1:
        return DistInfo(), dev
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank), dev


def shard(x: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """This rank's contiguous slice of a global batch (the first ranks get one more if it does not divide)."""
    return x.tensor_split(info.world_size)[info.rank] if info.enabled else x


def any_flag(flags: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Element-wise OR of small flag tensors over all ranks, so every rank stops at the same step."""
    if info.enabled:
        flags = flags.clone()
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    return flags


def all_sum(x: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum of a tensor over all ranks (e.g. loss sums and counts for epoch metrics)."""
    if info.enabled:
        x = x.clone()
        dist.all_reduce(x)
    return x


def broadcast_text(text: str | None, info: DistInfo) -> str | None:
    """Rank 0's string on every rank (e.g. the run folder's name)."""
    if not info.enabled:
        return text
    box = [text]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def cleanup(info: DistInfo) -> None:
    """Leaves the process group (at the end of a run)."""
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
