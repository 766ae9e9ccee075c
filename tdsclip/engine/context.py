"""The process a run executes in: its rank, device, precision and threads, chosen once by
:func:`setup_process` and logged."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch

from tdsclip.engine import distributed
from tdsclip.engine.launch import quiet_non_main
from tdsclip.engine.precision import Precision, resolve_precision
from tdsclip.engine.threads import ThreadPlan, apply_threads, plan_threads
from tdsclip.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProcessContext:
    """Where and how this process computes."""

    dist: distributed.DistInfo
    device: torch.device
    precision: Precision
    threads: ThreadPlan

    @property
    def dtype(self) -> torch.dtype | None:
        """The autocast dtype (None for fp32)."""
        return self.precision.dtype

    @property
    def is_main(self) -> bool:
        return self.dist.is_main


def resolve_device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                "trainer.device", "cuda, but no CUDA device is visible", hint="use auto or cpu"
            )
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    if name != "cpu":
        raise ConfigError("trainer.device", f"must be auto, cpu or cuda, got {name!r}")
    return torch.device("cpu")


def setup_process(trainer_cfg: Any, *, num_workers: int) -> ProcessContext:
    """Join the process group (under torchrun), then pick the device, the precision and the
    threads from the ``trainer`` config group; rank 0 logs what was chosen and why."""
    dinfo = distributed.init_process_group()
    quiet_non_main(dinfo.rank)
    device = resolve_device(trainer_cfg.device, dinfo.local_rank)
    precision = resolve_precision(trainer_cfg.precision, device)
    threads = plan_threads(
        trainer_cfg.threads, num_workers=num_workers, local_processes=dinfo.local_world_size
    )
    apply_threads(threads)
    if dinfo.is_main:
        log.info("precision: %s", precision.describe())
        log.info("threads: %s", threads.describe())
    return ProcessContext(dist=dinfo, device=device, precision=precision, threads=threads)
