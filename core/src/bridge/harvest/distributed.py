"""torch.distributed for multi-process harvesting: which rank this process is, barriers, one broadcast.

A process belongs to a multi-process run when torch.distributed is already initialised, or when its
environment says so as ``torchrun`` (or any launcher following its conventions) sets it: ``RANK``,
``WORLD_SIZE`` > 1, ``MASTER_ADDR``, ``MASTER_PORT``. The process group is then initialised here with the
``gloo`` backend (it runs on CPUs; the model itself runs wherever it was loaded) and torn down again
when the process exits.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Ranks:
    """This process's ``rank`` among ``world_size`` processes (0 of 1 for a single process)."""

    rank: int = 0
    world_size: int = 1

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank (a picklable object)."""
        if self.world_size == 1:
            return value
        payload = [value if self.rank == 0 else None]
        dist.broadcast_object_list(payload, src=0)
        return payload[0]

    def device(self) -> torch.device | None:
        """The GPU this rank should use (``LOCAL_RANK``) when several processes share CUDA devices; else None."""
        if self.world_size == 1 or not torch.cuda.is_available():
            return None
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())


def join_process_group() -> Ranks:
    """The ranks of this run. Initialises the process group a launcher described (destroyed at exit)."""
    if dist.is_available() and dist.is_initialized():
        return Ranks(dist.get_rank(), dist.get_world_size())
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        return Ranks()
    dist.init_process_group(backend="gloo")
    atexit.register(_destroy)
    return Ranks(dist.get_rank(), dist.get_world_size())


def _destroy() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


__all__ = ["Ranks", "join_process_group"]
