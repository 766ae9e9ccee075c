"""Classification metrics: top-k hits, the confusion matrix, the per-split report."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor


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
