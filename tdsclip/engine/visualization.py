"""What a model looks at in one video (``python -m tdsclip.visualize``).

One view of the video (the segment centres, the centre crop: the validation view) goes through
the model while forward hooks record the two places where TDS-CLIP's motion path acts:

- the SME-Adapter's motion branch (``SMEStem.motion_norm``'s output, times the fusion weight,
  before it is added to the centre-frame tokens): its RMS over channels per patch;
- every TD-Adapter's gate: ``out = z + z * (sigmoid(y) - 0.5)`` with ``y`` the output of
  ``TDAdapter.expand_norm``; |sigmoid(y) - 0.5| averaged over channels and TD layers per
  patch, i.e. how strongly the adapter re-weights that patch's features.

Both come out as (T, g, g) maps, drawn over the frames by :mod:`tdsclip.report.visual`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from tdsclip.engine.precision import autocast
from tdsclip.engine.prediction import load_video_model, ranked, video_path
from tdsclip.models import TDSCLIP

log = logging.getLogger("tdsclip.visualize")


@dataclass
class MotionMaps:
    """One view's frames, the model's top classes and where its motion path responds."""

    frames: np.ndarray  # (T, H, W, 3) uint8, the centre frame of every segment
    top: list[tuple[str, float]]  # (class, probability), most likely first
    motion: np.ndarray | None  # (T, g, g) SME motion-branch RMS; None without SME
    gate: np.ndarray | None  # (T, g, g) mean |TD gate|; None without TD-Adapters


def _patch_map(tokens: Tensor, grid: int) -> Tensor:
    """(B, T, N, C) -> (T, g, g) of the first clip."""
    return tokens[0].float().unflatten(1, (grid, grid)).mean(-1)  # (T, g, g)


@torch.no_grad()
def capture_motion(model: TDSCLIP, video: Tensor) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Logits of ``video`` (1, T, M, 3, H, W), normalised, and the motion-branch and gate
    maps (T, g, g) recorded by forward hooks on the SME stem and the TD-Adapters."""
    side, grid = model.side, model.side.grid_size
    stem = side.stem
    adapters = [block.td for block in side.blocks if block.td is not None]
    motion: list[Tensor] = []
    gates: list[Tensor] = []

    def on_motion(_module: nn.Module, _inputs: tuple, out: Tensor) -> None:
        weighted = stem.motion_weight * out.float()  # (B, T, N, d), as added to the stream
        motion.append(_patch_map(weighted.square(), grid).sqrt())

    def on_gate(_module: nn.Module, _inputs: tuple, y: Tensor) -> None:
        gates.append(_patch_map((torch.sigmoid(y.float()) - 0.5).abs(), grid))

    hooks = [a.expand_norm.register_forward_hook(on_gate) for a in adapters]
    if stem.motion_norm is not None:
        hooks.append(stem.motion_norm.register_forward_hook(on_motion))
    try:
        logits = model(video)
    finally:
        for hook in hooks:
            hook.remove()
    gate = torch.stack(gates).mean(0) if gates else None  # mean over TD layers
    return logits, (motion[0] if motion else None), gate


def single_view_config(data_cfg: object) -> dict:
    """The data config with the test protocol cut to one clip and one crop: the validation
    view (segment centres, centre crop)."""
    plain = (
        OmegaConf.to_container(data_cfg, resolve=True)
        if OmegaConf.is_config(data_cfg)
        else dict(data_cfg)
    )
    return {**plain, "test_clips": 1, "test_crops": 1}


def motion_maps(cfg: DictConfig) -> MotionMaps:
    """Frames, top-``cfg.topk`` classes and motion maps of ``cfg.video`` (``cfg.checkpoint``)."""
    from tdsclip.data import normalize_video, read_video_views

    path = video_path(cfg.video)
    vm = load_video_model(cfg)
    view = read_video_views(str(path), single_view_config(vm.data_cfg))  # (1, T, M, 3, H, W)
    with autocast(vm.ctx.device, vm.ctx.dtype):
        logits, motion, gate = capture_motion(vm.model, normalize_video(view.to(vm.ctx.device)))
    probs = logits[0].float().softmax(-1)  # (classes,)
    centre = view[0, :, view.shape[2] // 2]  # (T, 3, H, W) uint8
    return MotionMaps(
        frames=centre.permute(0, 2, 3, 1).numpy(),  # (T, H, W, 3)
        top=ranked(probs.cpu(), vm.classes, cfg.topk),
        motion=None if motion is None else motion.cpu().numpy(),
        gate=None if gate is None else gate.cpu().numpy(),
    )


def visualize(cfg: DictConfig) -> Path:
    """Draw :func:`motion_maps` of ``cfg.video`` into ``cfg.out`` (default: ``<video
    name>.visualize.png`` in the working directory); returns the PNG's path."""
    from tdsclip.report.visual import plot_motion_maps

    maps = motion_maps(cfg)
    video = Path(cfg.video)
    out = Path(cfg.out) if cfg.out else Path.cwd() / f"{video.stem}.visualize.png"
    title = f"{video.name} - {Path(cfg.checkpoint).name} - 1 view: segment centres, centre crop"
    plot_motion_maps(maps.frames, maps.top, maps.motion, maps.gate, out, title=title)
    log.info("wrote %s", out)
    return out
