"""Training: `python -m tdsclip.train [experiment=NAME] [key=value ...]`.

The same command runs on one CPU, one GPU, under ``torchrun --nproc_per_node=N`` (also
multi-node), as Hydra ``--multirun`` sweeps, and with ``trainer.nproc=N`` starting N local
workers itself (sweeps cannot use torchrun). With no arguments it runs the built-in default
job: a tiny TDS-CLIP on synthetic motion videos, on the CPU, in a few minutes. The loop
itself is :class:`tdsclip.engine.trainer.Trainer`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from tdsclip.engine.cli import raise_worker_error, reported_errors, worker_error
from tdsclip.engine.launch import CONFIG_DIR, launched_by_torchrun, run_hydra
from tdsclip.errors import TdsclipError

# torch and the engine load inside the functions: a refused command line answers at once.


def train(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Train (and validate) as ``cfg`` says in this process; returns the final metrics."""
    from tdsclip.engine.trainer import Trainer

    return Trainer(cfg, run_dir).fit()


def run(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Train in this process, or start ``trainer.nproc`` local workers when not under torchrun."""
    from tdsclip.engine import distributed

    nproc = int(cfg.trainer.nproc)
    if nproc > 1 and not launched_by_torchrun():
        container = OmegaConf.to_container(cfg, resolve=True)
        results = distributed.launch_local(nproc, _worker, container, str(run_dir))
        return raise_worker_error(results[0])
    return train(cfg, run_dir)


def _worker(cfg_container: dict[str, Any], run_dir: str) -> dict[str, Any]:
    """Entry point of a self-launched worker process (tdsclip errors come back as values)."""
    from tdsclip.engine import distributed
    from tdsclip.engine.launch import setup_worker_logging

    rank = distributed.env_info().rank
    setup_worker_logging(rank, Path(run_dir) / "train.log")
    cfg = OmegaConf.create(cfg_container)
    OmegaConf.set_struct(cfg, True)
    try:
        return train(cfg, Path(run_dir))
    except TdsclipError as e:
        return worker_error(e)
    finally:
        distributed.destroy_process_group()


def final_line(result: dict[str, Any], run_dir: Path) -> str:
    """The run's last line: the final validation, the best epoch (the one in best.pt)."""
    return (
        f"final: val_top1={result['val_top1']:.2f} val_top5={result['val_top5']:.2f} "
        f"chance={result['chance']:.2f} best_epoch={result['best_epoch']} "
        f"best_top1={result['best_top1']:.2f} run_dir={run_dir}"
    )


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
@reported_errors("tdsclip.train")
def _hydra_main(cfg: DictConfig) -> float | None:
    from tdsclip.engine import distributed
    from tdsclip.engine.validation import validate_config

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    OmegaConf.set_struct(cfg, True)
    validate_config(cfg)
    result = run(cfg, run_dir)
    distributed.destroy_process_group()
    if result.get("status") == "finished" and distributed.env_info().rank == 0:
        sys.stdout.flush()
        sys.stdout.write(final_line(result, run_dir) + "\n")
        sys.stdout.flush()
        return float(result["val_top1"])  # the value a Hydra sweeper optimises
    return None


def main() -> None:
    run_hydra(_hydra_main, config_name="train")


if __name__ == "__main__":
    main()
