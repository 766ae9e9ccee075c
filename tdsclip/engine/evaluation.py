"""Evaluation of a model on a split (``python -m tdsclip.eval``, validation during training,
the multi-view test after it).

Every view (clips x crops) of a video is classified, softmax scores are averaged per video,
and each video counts exactly once however many processes evaluate (no padding duplicates).
Unreadable videos are reported and excluded from the metric, never replaced.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from tdsclip.engine import distributed
from tdsclip.engine.context import ProcessContext, setup_process
from tdsclip.engine.metrics import classification_report
from tdsclip.engine.pictures import draw_report
from tdsclip.engine.precision import autocast
from tdsclip.errors import UserError

log = logging.getLogger("tdsclip.eval")


@dataclass
class EvalResult:
    """Per-video scores of one split, gathered from every rank."""

    indices: torch.Tensor  # (V,) dataset indices, sorted
    scores: torch.Tensor  # (V, classes) mean softmax over views
    labels: torch.Tensor  # (V,)
    unreadable: list[tuple[int, str]] = field(default_factory=list)  # (index, error)

    def report(self, num_classes: int) -> dict[str, Any]:
        rep = classification_report(self.scores, self.labels, num_classes)
        rep["unreadable"] = len(self.unreadable)
        return rep


@torch.no_grad()
def collect_scores(
    model: nn.Module,
    loader: Any,
    *,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    progress: bool = False,
) -> EvalResult:
    """Mean softmax over views for this rank's share of the loader, gathered on all ranks."""
    from tqdm import tqdm

    from tdsclip.data import normalize_video

    model.eval()
    indices, scores, labels, unreadable = [], [], [], []
    for batch in tqdm(loader, desc="eval", disable=not progress, leave=False):
        valid = batch["valid"].bool()
        for i in (~valid).nonzero().flatten().tolist():
            unreadable.append((int(batch["index"][i]), batch["error"][i]))
        if not valid.any():
            continue
        video = batch["video"][valid]  # (b, V, T, M, 3, H, W) uint8
        b, views = video.shape[:2]
        video = normalize_video(video.to(device, non_blocking=True)).flatten(0, 1)
        with autocast(device, amp_dtype):
            logits = model(video)  # (b * V, classes)
        probs = logits.float().softmax(dim=-1).view(b, views, -1).mean(dim=1)  # (b, classes)
        scores.append(probs.cpu())
        labels.append(batch["label"][valid])
        indices.append(batch["index"][valid])
    local = (
        torch.cat(indices) if indices else torch.zeros(0, dtype=torch.long),
        torch.cat(scores) if scores else torch.zeros(0),
        torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long),
        unreadable,
    )
    gathered = distributed.all_gather_objects(local)
    all_idx = torch.cat([g[0] for g in gathered])
    order = all_idx.argsort()
    if len(all_idx.unique()) != len(all_idx):
        raise RuntimeError("a video was evaluated twice: the eval sampler must not pad")
    nonempty = [g[1] for g in gathered if g[1].numel()]
    all_scores = torch.cat(nonempty) if nonempty else torch.zeros(0, 0)
    return EvalResult(
        indices=all_idx[order],
        scores=all_scores[order] if all_scores.numel() else all_scores,
        labels=torch.cat([g[2] for g in gathered])[order],
        unreadable=sorted(u for g in gathered for u in g[3]),
    )


SUMMARY_KEYS = ("num_videos", "top1", "top5", "mean_class_acc", "unreadable")


def write_report(
    out_dir: Path, result: EvalResult, report: dict[str, Any], classes: list[str], paths: list[str]
) -> None:
    """metrics.json, per_class.csv, confusion.csv, predictions.csv, unreadable.csv (the PNGs
    are drawn by :func:`tdsclip.engine.pictures.draw_report`)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = {k: report[k] for k in SUMMARY_KEYS}
    (out_dir / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
    cm = report.get("confusion")
    with (out_dir / "per_class.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["class_index", "class_name", "num_videos", "top1"])
        for i, name in enumerate(classes):
            support = int(cm[i].sum()) if cm is not None else 0
            acc = report["per_class_acc"][i] if cm is not None else None
            writer.writerow([i, name, support, "" if acc is None else f"{acc:.4f}"])
    if cm is not None:
        with (out_dir / "confusion.csv").open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["true \\ predicted", *classes])
            for i, name in enumerate(classes):
                writer.writerow([name, *cm[i].tolist()])
    with (out_dir / "predictions.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["index", "path", "label", "pred", "score"])
        if result.scores.numel():
            top = result.scores.max(dim=1)
            for idx, label, pred, score in zip(
                result.indices.tolist(),
                result.labels.tolist(),
                top.indices.tolist(),
                top.values.tolist(),
                strict=True,
            ):
                writer.writerow([idx, paths[idx], label, pred, f"{score:.6f}"])
    with (out_dir / "unreadable.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["index", "path", "error"])
        for idx, error in result.unreadable:
            writer.writerow([idx, paths[idx], error])


def evaluate_split(
    model: nn.Module,
    cfg: DictConfig,
    split: str,
    *,
    num_classes: int,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    dinfo: distributed.DistInfo,
    out_dir: Path,
    what: str,
) -> dict[str, Any]:
    """Score every video of ``split`` with ``model``; rank 0 writes the report to ``out_dir``.

    ``what`` names the evaluated weights in the log. Returns the summary metrics.
    """
    from tdsclip.data import build_dataset, build_loader

    if split not in ("val", "test"):
        raise ValueError(f"split must be val or test, got {split!r}")
    dataset = build_dataset(cfg.data, split)
    if dataset.num_classes != num_classes:
        raise UserError(
            f"{what} predicts {num_classes} classes, the {split} data has {dataset.num_classes}",
            hint="evaluate with the experiment (data config) these weights were trained on",
        )
    loader = build_loader(
        dataset,
        split=split,
        batch_size=eval_batch_size(cfg.data, split),
        num_workers=cfg.data.workers,
        seed=cfg.seed,
        rank=dinfo.rank,
        world_size=dinfo.world_size,
        pin_memory=cfg.data.pin_memory and device.type == "cuda",
        persistent_workers=False,
        prefetch_factor=cfg.data.prefetch_factor,
        drop_last=False,
    )
    views = (
        f"{cfg.data.test_clips} clips x {cfg.data.test_crops} crops"
        if split == "test"
        else "1 view"
    )
    log.info("evaluating %s on %d %s videos (%s)", what, len(dataset), split, views)
    progress = dinfo.is_main and cfg.trainer.progress_bar
    result = collect_scores(model, loader, device=device, amp_dtype=amp_dtype, progress=progress)
    report = result.report(num_classes)
    if dinfo.is_main:
        write_report(out_dir, result, report, list(dataset.classes), list(dataset.paths))
        draw_report(out_dir, report, list(dataset.classes), title=f"{what}, {split} ({views})")
        log.info(
            "%s: top1=%.2f top5=%.2f mean_class_acc=%.2f over %d videos; %d unreadable "
            "(excluded); report in %s",
            split,
            report["top1"],
            report["top5"],
            report["mean_class_acc"],
            report["num_videos"],
            report["unreadable"],
            out_dir,
        )
    distributed.barrier()
    return {k: report[k] for k in SUMMARY_KEYS}


def evaluate(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Evaluate ``cfg.checkpoint`` on ``cfg.split`` and write the report into ``run_dir``."""
    from tdsclip.engine.checkpoint import load_checkpoint, model_from_checkpoint
    from tdsclip.engine.validation import validate_config

    validate_config(cfg)
    ckpt = load_checkpoint(cfg.checkpoint)
    ctx = setup_process(cfg.trainer, num_workers=cfg.data.workers)
    model = model_from_checkpoint(ckpt, pretrained=cfg.pretrained).to(ctx.device)
    if ctx.dtype is not None:
        model.backbone.cast_weights(ctx.dtype)
    return evaluate_split(
        model,
        cfg,
        cfg.split,
        num_classes=int(ckpt["model_config"]["num_classes"]),
        device=ctx.device,
        amp_dtype=ctx.dtype,
        dinfo=ctx.dist,
        out_dir=run_dir,
        what=str(cfg.checkpoint),
    )


def eval_batch_size(data_cfg: Any, split: str) -> int:
    """Videos per eval batch: about as many clips per forward as a training step."""
    if split == "val":
        return int(data_cfg.batch_size) * int(data_cfg.num_sample)
    views = int(data_cfg.test_clips) * int(data_cfg.test_crops)
    return max(1, int(data_cfg.batch_size) * int(data_cfg.num_sample) // views)


def test_checkpoint(
    cfg: DictConfig, path: Path, model: nn.Module, ctx: ProcessContext, run_dir: Path
) -> dict[str, Any]:
    """Multi-view test (clips x crops) of the side network in ``path`` (e.g. ``best.pt``)
    loaded into ``model``; the report goes to ``run_dir/test``. Keys are prefixed ``test_``."""
    from tdsclip.engine.checkpoint import load_checkpoint

    distributed.barrier()  # rank 0 has written the checkpoint
    model.side.load_state_dict(load_checkpoint(path)["side"])
    summary = evaluate_split(
        model,
        cfg,
        "test",
        num_classes=cfg.model.num_classes,
        device=ctx.device,
        amp_dtype=ctx.dtype,
        dinfo=ctx.dist,
        out_dir=run_dir / "test",
        what=str(path),
    )
    return {f"test_{k}": v for k, v in summary.items()}
