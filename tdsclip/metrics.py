"""Classification metrics and the sinks that training metrics are written to.

Sinks share one tiny protocol (``log(metrics, step)``, ``close()``); only rank 0 creates them.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------- metrics
def topk_correct(scores: Tensor, labels: Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[int, int]:
    """Number of samples whose label is among the top-k scores, per k (k capped at classes)."""
    maxk = min(max(ks), scores.shape[1])
    top = scores.topk(maxk, dim=1).indices  # (B, maxk)
    hit = top == labels[:, None]  # (B, maxk)
    return {k: int(hit[:, : min(k, maxk)].any(dim=1).sum()) for k in ks}


def confusion_matrix(pred: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """(classes, classes) counts, rows = true class, columns = predicted class."""
    flat = labels.long() * num_classes + pred.long()
    return torch.bincount(flat, minlength=num_classes**2).view(num_classes, num_classes)


def classification_report(scores: Tensor, labels: Tensor, num_classes: int) -> dict[str, Any]:
    """Top-1 / top-5 (%), mean class accuracy (%), per-class accuracy and confusion matrix.

    Classes absent from ``labels`` are left out of the mean class accuracy.
    """
    n = labels.numel()
    if n == 0:
        return {"num_videos": 0, "top1": math.nan, "top5": math.nan, "mean_class_acc": math.nan}
    correct = topk_correct(scores, labels)
    cm = confusion_matrix(scores.argmax(1), labels, num_classes)
    support = cm.sum(1)
    per_class = cm.diag().double() / support.clamp(min=1)
    present = support > 0
    return {
        "num_videos": n,
        "top1": 100.0 * correct[1] / n,
        "top5": 100.0 * correct[5] / n,
        "mean_class_acc": 100.0 * float(per_class[present].mean()),
        "per_class_acc": [
            100.0 * float(acc) if count > 0 else None
            for acc, count in zip(per_class, support, strict=True)
        ],
        "confusion": cm,
    }


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
