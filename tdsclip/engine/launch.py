"""Entry-point plumbing: where the Hydra configs live, the run stamp every rank shares,
Hydra's files written by rank 0 only, logging of processes Hydra did not set up, and the git
revision of the code that runs."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "configs")


def check_config_dir() -> None:
    if not Path(CONFIG_DIR, "train.yaml").is_file():
        raise FileNotFoundError(
            f"tdsclip's Hydra configs were not found at {CONFIG_DIR}; install the repository "
            "in editable mode (`pip install -e .` from the checkout)."
        )


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def local_run_stamp() -> str:
    """``$TDSCLIP_RUN_STAMP``, else the time now: the default name of a run directory."""
    return os.environ.get("TDSCLIP_RUN_STAMP") or datetime.now().strftime("%Y-%m-%d_%H-%M-%S")


def register_resolvers() -> None:
    """``${run_stamp:}``: one timestamp for every rank of a run (under torchrun rank 0 picks
    it). torch is imported only there: a command line refused before the run answers fast."""
    if launched_by_torchrun():
        from tdsclip.engine import distributed

        stamp = distributed.shared_run_stamp()
    else:
        stamp = local_run_stamp()
    OmegaConf.register_new_resolver("run_stamp", lambda: stamp, replace=True)


def compose_config(overrides: Sequence[str], config_name: str = "train") -> DictConfig:
    """The config ``python -m tdsclip.<config_name> OVERRIDES`` runs with (struct mode, not
    resolved, no ``hydra`` node), composed outside any Hydra app (tools, tests)."""
    from hydra import compose, initialize_config_dir

    check_config_dir()
    if not OmegaConf.has_resolver("run_stamp"):
        OmegaConf.register_new_resolver("run_stamp", lambda: "composed")
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name, overrides=list(overrides))
    OmegaConf.set_struct(cfg, True)
    return cfg


def run_hydra(
    hydra_main: Callable[[], Any],
    *,
    config_name: str,
    join_process_group: bool = True,
) -> None:
    """Start the ``@hydra.main`` entry point ``python -m tdsclip.<config_name>``: configs
    found, process group joined (under torchrun), one run stamp for every rank, the command
    line checked before Hydra runs (unknown keys and config names, a run directory that
    already holds checkpoints), user errors reported in a line or two, Hydra's own files
    written by rank 0 only."""
    program = f"tdsclip.{config_name}"
    from tdsclip.engine.cli import check_command_line, exit_on_error, take_verbose_flag

    take_verbose_flag(sys.argv)
    check_config_dir()
    rank = 0
    if join_process_group and launched_by_torchrun():
        from tdsclip.engine import distributed

        rank = distributed.init_process_group().rank
    register_resolvers()
    with exit_on_error(program):
        check_command_line(CONFIG_DIR, config_name, sys.argv[1:])
    sys.argv += hydra_rank_overrides(rank)
    hydra_main()


def hydra_rank_overrides(rank: int) -> list[str]:
    """Command-line additions for ranks > 0: only rank 0 writes Hydra's files and log."""
    if rank == 0:
        return []
    return ["hydra.output_subdir=null", "hydra/job_logging=stdout"]


def setup_worker_logging(rank: int, log_file: Path | None) -> None:
    """Logging for processes Hydra did not configure (self-launched workers)."""
    root = logging.getLogger()
    root.handlers.clear()
    fmt = logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(fmt)
    root.addHandler(console)
    if rank == 0 and log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(log_file)
        file_handler.setFormatter(fmt)
        root.addHandler(file_handler)
    root.setLevel(logging.INFO if rank == 0 else logging.WARNING)


def quiet_non_main(rank: int) -> None:
    if rank != 0:
        logging.getLogger().setLevel(logging.WARNING)


@cache
def code_revision() -> str | None:
    """The git commit of the tdsclip checkout in use, ``+dirty`` when its tracked files differ
    from that commit; None outside a git checkout (an installed wheel) or without git."""
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None

    def git(*args: str) -> str:
        run = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30, check=True
        )
        return run.stdout.strip()

    try:
        sha = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("+dirty" if dirty else "")
