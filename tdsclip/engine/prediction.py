"""Classify one video file with a trained or converted model."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from tdsclip.engine.cli import verbose
from tdsclip.engine.context import ProcessContext, setup_process
from tdsclip.engine.precision import autocast
from tdsclip.errors import MissingFileError, UserError
from tdsclip.models import TDSCLIP

log = logging.getLogger("tdsclip.predict")


@dataclass
class VideoModel:
    """A model ready for single videos: its process, the data config it decodes with and its
    class names."""

    model: TDSCLIP
    ctx: ProcessContext
    data_cfg: Any  # the ``data`` config group (a training checkpoint's own, if it has one)
    classes: list[str]


def load_video_model(cfg: DictConfig) -> VideoModel:
    """``cfg.checkpoint`` on the device ``cfg.trainer`` picks, in eval mode, with one class
    name per output (else a UserError saying where the names came from)."""
    from tdsclip.data import build_dataset
    from tdsclip.engine.checkpoint import load_checkpoint, model_from_checkpoint

    ckpt = load_checkpoint(cfg.checkpoint)
    data_cfg = cfg.data
    if ckpt.get("config"):  # a training checkpoint: decode exactly as its run did
        data_cfg = ckpt["config"]["data"]
    classes = list(ckpt.get("classes") or build_dataset(data_cfg, "val").classes)
    check_class_names(classes, int(ckpt["model_config"]["num_classes"]), ckpt)
    ctx = setup_process(cfg.trainer, num_workers=0)
    model = model_from_checkpoint(ckpt, pretrained=cfg.pretrained).to(ctx.device)
    if ctx.dtype is not None:
        model.backbone.cast_weights(ctx.dtype)
    return VideoModel(model=model, ctx=ctx, data_cfg=data_cfg, classes=classes)


def check_class_names(classes: list[str], num_outputs: int, ckpt: dict) -> None:
    """One class name per model output, or an error saying where the names came from."""
    if len(classes) == num_outputs:
        return
    source = "the checkpoint" if ckpt.get("classes") else "the data config's label file"
    raise UserError(
        f"the model predicts {num_outputs} classes but {source} names {len(classes)}",
        hint="give the experiment (or data.labels) the model was trained with",
    )


def video_path(value: str) -> Path:
    """The video file to read; a missing one is a user error. Decoders' C logs are kept
    quiet unless ``--verbose``: the error names each backend's reason already."""
    if not verbose():
        logging.getLogger("tdsclip.data.decoding").setLevel(logging.ERROR)
    path = Path(value).expanduser()
    if not path.is_file():
        raise MissingFileError(f"video not found: {path}", hint="video=PATH names one file")
    return path


def ranked(probs: torch.Tensor, classes: list[str], k: int) -> list[tuple[str, float]]:
    """The ``k`` most likely (class name, probability) of ``probs`` (classes,)."""
    top = probs.topk(min(int(k), len(classes)))
    return [(classes[i], float(p)) for p, i in zip(top.values, top.indices.tolist(), strict=True)]


def predict(cfg: DictConfig) -> list[tuple[str, float]]:
    """The ``cfg.topk`` most likely classes of ``cfg.video`` with their probabilities (the
    softmax averaged over the test views: clips x crops)."""
    from tdsclip.data import normalize_video, read_video_views

    path = video_path(cfg.video)
    vm = load_video_model(cfg)
    views = read_video_views(str(path), vm.data_cfg)  # (V, T, M, 3, H, W) uint8
    with torch.no_grad(), autocast(vm.ctx.device, vm.ctx.dtype):
        logits = vm.model(normalize_video(views.to(vm.ctx.device)))  # (V, classes)
    probs = logits.float().softmax(-1).mean(0)  # (classes,)
    return ranked(probs, vm.classes, cfg.topk)
