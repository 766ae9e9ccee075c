"""Classify one video file with a trained or converted model."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from omegaconf import DictConfig

from tdsclip.engine.cli import verbose
from tdsclip.engine.context import setup_process
from tdsclip.engine.precision import autocast
from tdsclip.errors import MissingFileError, UserError

log = logging.getLogger("tdsclip.predict")


def predict(cfg: DictConfig) -> list[tuple[str, float]]:
    """The ``cfg.topk`` most likely classes of ``cfg.video`` with their probabilities (the
    softmax averaged over the test views: clips x crops)."""
    from tdsclip.data import build_dataset, normalize_video, read_video_views
    from tdsclip.engine.checkpoint import load_checkpoint, model_from_checkpoint

    if not verbose():  # the error names each backend's reason; their C logs add nothing
        logging.getLogger("tdsclip.data.decoding").setLevel(logging.ERROR)
    path = Path(cfg.video).expanduser()
    if not path.is_file():
        raise MissingFileError(f"video not found: {path}", hint="video=PATH names one file")
    ckpt = load_checkpoint(cfg.checkpoint)
    data_cfg = cfg.data
    if ckpt.get("config"):  # a training checkpoint: decode exactly as its run did
        data_cfg = ckpt["config"]["data"]
    classes = ckpt.get("classes") or list(build_dataset(data_cfg, "val").classes)
    check_class_names(classes, int(ckpt["model_config"]["num_classes"]), ckpt)
    ctx = setup_process(cfg.trainer, num_workers=0)
    model = model_from_checkpoint(ckpt, pretrained=cfg.pretrained).to(ctx.device)
    if ctx.dtype is not None:
        model.backbone.cast_weights(ctx.dtype)
    views = read_video_views(str(path), data_cfg)  # (V, T, M, 3, H, W) uint8
    with torch.no_grad(), autocast(ctx.device, ctx.dtype):
        logits = model(normalize_video(views.to(ctx.device)))  # (V, classes)
    probs = logits.float().softmax(-1).mean(0)  # (classes,)
    top = probs.topk(min(int(cfg.topk), len(classes)))
    return [(classes[i], float(p)) for p, i in zip(top.values, top.indices.tolist(), strict=True)]


def check_class_names(classes: list[str], num_outputs: int, ckpt: dict) -> None:
    """One class name per model output, or an error saying where the names came from."""
    if len(classes) == num_outputs:
        return
    source = "the checkpoint" if ckpt.get("classes") else "the data config's label file"
    raise UserError(
        f"the model predicts {num_outputs} classes but {source} names {len(classes)}",
        hint="give the experiment (or data.labels) the model was trained with",
    )
