"""Process-group helpers: one code path for 1 process, torchrun, and self-launched workers.

``torchrun`` (or :func:`launch_local`) sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR; with
none of them set the run is a single process and every helper degrades to a no-op.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from tdsclip.engine.launch import launched_by_torchrun, local_run_stamp

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1  # processes of this run on this machine

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def env_info() -> DistInfo:
    if not launched_by_torchrun():
        return DistInfo()
    return DistInfo(
        rank=int(os.environ["RANK"]),
        world_size=int(os.environ["WORLD_SIZE"]),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
        local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"])),
    )


def info() -> DistInfo:
    if dist.is_available() and dist.is_initialized():
        env = env_info()
        return DistInfo(
            dist.get_rank(), dist.get_world_size(), env.local_rank, env.local_world_size
        )
    return DistInfo()


def default_backend() -> str:
    return "nccl" if torch.cuda.is_available() else "gloo"


def init_process_group() -> DistInfo:
    """Join the process group described by the environment (idempotent; no-op when alone).

    The backend is nccl with CUDA, else gloo; ``TDSCLIP_DIST_BACKEND`` overrides it.
    """
    env = env_info()
    if not env.enabled or dist.is_initialized():
        return info() if dist.is_initialized() else env
    backend = os.environ.get("TDSCLIP_DIST_BACKEND") or default_backend()
    if backend == "nccl":
        torch.cuda.set_device(env.local_rank)
    dist.init_process_group(backend=backend, timeout=_dt.timedelta(minutes=30))
    log.debug("rank %d/%d joined the %s process group", env.rank, env.world_size, backend)
    return env


def destroy_process_group() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` of rank ``src`` on every rank; ``obj`` itself when alone."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_objects(obj: Any) -> list[Any]:
    """A list with every rank's ``obj`` (rank order); ``[obj]`` when alone."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def shared_run_stamp() -> str:
    """A timestamp chosen by rank 0 and shared with every rank (same run directory)."""
    return broadcast_object(local_run_stamp())


def launch_local(nproc: int, entrypoint: Callable[..., Any], *args: Any) -> dict[int, Any]:
    """Run ``entrypoint(*args)`` in ``nproc`` local worker processes (torch elastic API).

    Used when a single process (e.g. a Hydra multirun job) is asked for several devices; the
    workers see the same environment torchrun would give them. Returns {rank: return value}.
    """
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=f"tdsclip-{uuid.uuid4().hex[:8]}",
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",
        max_restarts=0,
        monitor_interval=1,
    )
    return elastic_launch(config, entrypoint)(*args)
