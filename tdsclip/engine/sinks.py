"""Metric sinks: where training metrics go (metrics.jsonl, TensorBoard, Weights & Biases).

Sinks share one tiny protocol (``log(metrics, step)``, ``close()``); only rank 0 creates them
(:func:`make_sinks`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Protocol

from omegaconf import DictConfig, OmegaConf


# --------------------------------------------------------------------------------- sinks
class MetricSink(Protocol):
    def log(self, metrics: dict[str, float], step: int) -> None: ...

    def close(self) -> None: ...


class JSONLSink:
    """One JSON object per line: ``{"step": ..., **metrics}`` (appends across resumes)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("a", encoding="utf-8")

    def log(self, metrics: dict[str, float], step: int) -> None:
        self._file.write(json.dumps({"step": step, **metrics}) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class TensorBoardSink:
    def __init__(self, log_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(str(log_dir))

    def log(self, metrics: dict[str, float], step: int) -> None:
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and math.isfinite(value):
                self._writer.add_scalar(key, value, step)
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class WandbSink:
    """Weights & Biases, imported only when enabled; ``mode='offline'`` needs no account."""

    def __init__(
        self,
        *,
        project: str,
        run_dir: Path,
        config: dict[str, Any],
        name: str | None = None,
        entity: str | None = None,
        mode: str = "online",
        tags: list[str] | None = None,
        run_id: str | None = None,
    ) -> None:
        try:
            import wandb
        except ImportError as err:  # pragma: no cover - wandb is a declared dependency
            raise RuntimeError("logger=wandb needs the wandb package: pip install wandb") from err
        self._run = wandb.init(
            project=project,
            entity=entity,
            name=name,
            dir=str(run_dir),
            config=config,
            mode=mode,
            tags=tags,
            id=run_id,
            resume="allow",
        )

    def log(self, metrics: dict[str, float], step: int) -> None:
        self._run.log(metrics, step=step)

    def close(self) -> None:
        self._run.finish()


class MultiSink:
    def __init__(self, sinks: list[MetricSink]) -> None:
        self.sinks = sinks

    def log(self, metrics: dict[str, float], step: int) -> None:
        for sink in self.sinks:
            sink.log(metrics, step)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()


def make_sinks(cfg: DictConfig, run_dir: Path) -> MultiSink:
    """The sinks the ``logger`` config group asks for, writing into ``run_dir``."""
    sinks: list[MetricSink] = []
    if cfg.logger.jsonl:
        sinks.append(JSONLSink(run_dir / "metrics.jsonl"))
    if cfg.logger.tensorboard:
        sinks.append(TensorBoardSink(run_dir / "tensorboard"))
    if cfg.logger.wandb.enabled:
        sinks.append(
            WandbSink(
                project=cfg.logger.wandb.project,
                entity=cfg.logger.wandb.entity,
                mode=cfg.logger.wandb.mode,
                tags=list(cfg.logger.wandb.tags),
                name=f"{cfg.task_name}/{cfg.run_id}",
                run_id=f"{cfg.task_name}-{cfg.run_id}".replace("/", "-"),
                run_dir=run_dir,
                config=OmegaConf.to_container(cfg, resolve=True),
            )
        )
    return MultiSink(sinks)
