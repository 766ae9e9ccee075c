"""Intra-op threads: how many the main process runs so that it and its data workers fit the
cores this process may use."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from tdsclip.errors import ConfigError


def available_cores() -> int:
    """CPU cores this process may use: its affinity mask, capped by a cgroup CPU quota
    (containers, Slurm), at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    if quota is not None:
        cores = min(cores, max(1, int(quota)))
    return max(1, cores)


def _cgroup_cpu_quota() -> float | None:
    """Cores granted by a cgroup v2 ``cpu.max`` (or v1 CFS) quota; None when unlimited."""
    try:
        text = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if text and text[0] != "max":
            return int(text[0]) / int(text[1])
        return None
    except (OSError, ValueError, IndexError):
        pass
    try:
        quota = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None


@dataclass(frozen=True)
class ThreadPlan:
    """Intra-op threads of the main process; each data worker runs one."""

    main: int
    workers: int
    cores: int
    reason: str

    def describe(self) -> str:
        return (
            f"{self.main} intra-op thread(s) in the main process, {self.workers} data "
            f"worker(s) x 1 thread, {self.cores} core(s) available ({self.reason})"
        )


def plan_threads(
    requested: int | None, *, num_workers: int, local_processes: int = 1
) -> ThreadPlan:
    """Threads for a training or evaluation process.

    The cores are shared by the ``local_processes`` ranks of this machine; each rank's data
    workers decode with one thread each (DataLoader sets it, the decoders are asked for one),
    and the main process gets the rest of its share, at least one. Threads beyond the free
    cores do not add speed: OpenMP's barriers then wait on descheduled threads and a step
    runs many times slower. ``requested`` (``trainer.threads``) overrides.
    """
    cores = available_cores()
    if requested is not None:
        if int(requested) < 1:
            raise ConfigError(
                "trainer.threads", f"must be a positive integer or null, got {requested}"
            )
        return ThreadPlan(int(requested), num_workers, cores, "set by trainer.threads")
    share = max(1, cores // max(1, local_processes))
    main = max(1, share - num_workers)
    return ThreadPlan(main, num_workers, cores, f"auto: {share} core(s) for this process")


def apply_threads(plan: ThreadPlan) -> None:
    torch.set_num_threads(plan.main)
