"""What the benchmark measures: the composed config and the models built from it.

``compose`` reads ``configs/`` as ``python -m tdsclip.train`` does, with random weights (the
cost does not depend on them). ``build_ours`` is tdsclip's model; ``build_reference`` the
authors' (imported at run time from a local checkout of BBYL9413/TDS-CLIP, never copied);
``build_full_finetune`` the same CLIP tower fully fine-tuned, the baseline a frozen tower is
measured against; ``floor_backbone`` our frozen tower alone, whose forward is the floor every
training step is read against.
"""

from __future__ import annotations

import builtins
import importlib.util
from pathlib import Path
from typing import Any

import torch

from tdsclip.engine.launch import compose_config


def compose(experiment: str | None, overrides: list[str]) -> Any:
    extra = [f"experiment={experiment}"] if experiment else []  # "": the default job
    cfg = compose_config([*extra, *overrides])
    cfg.model.backbone.pretrained = None  # random weights: the cost does not depend on them
    return cfg


def video_shape(cfg: Any, batch: int) -> tuple[int, ...]:
    """The shape of ``batch`` clips as the configured model takes them: (B, T, M, 3, H, W)."""
    return (
        batch,
        cfg.data.num_frames,
        cfg.data.num_local_frames,
        3,
        cfg.data.input_size,
        cfg.data.input_size,
    )


def build_ours(cfg: Any, *, grad_checkpointing: bool = False, compile_blocks: bool = False):
    from tdsclip.models import build_model

    model = build_model(cfg.model)
    model.side.set_grad_checkpointing(grad_checkpointing)
    if compile_blocks:
        model.side.compile_blocks()
    return model


def _tower_dims(cfg: Any) -> dict[str, Any]:
    """The configured CLIP tower's dims (image and patch size, width, layers, heads, MLP)."""
    from tdsclip.models.factory import BACKBONE_DIM_KEYS, backbone_dims

    b = cfg.model.backbone
    return backbone_dims(b.name, **{k: b[k] for k in BACKBONE_DIM_KEYS})


def build_reference(repo: Path, cfg: Any) -> tuple[torch.nn.Module, Any]:
    """The authors' VisualTransformer + fc, frozen like their training script does."""
    spec = importlib.util.spec_from_file_location("tds_reference_model", repo / "clip" / "model.py")
    if spec is None or spec.loader is None:
        raise FileNotFoundError(f"no clip/model.py under {repo}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    dims = _tower_dims(cfg)
    real_print = builtins.print
    builtins.print = lambda *a, **k: None  # their constructor prints; keep our output clean
    try:
        visual = module.VisualTransformer(
            input_resolution=dims["image_size"],
            patch_size=dims["patch_size"],
            width=dims["width"],
            layers=dims["layers"],
            heads=dims["heads"],
            output_dim=512,
            T=cfg.data.num_frames,
            side_dim=cfg.model.side.dim,
            num_diff=cfg.data.num_local_frames,
        )
    finally:
        builtins.print = real_print
    for name, param in visual.named_parameters():
        param.requires_grad = "side" in name  # their `my_fix_clip`: only side parts train
    model = torch.nn.ModuleDict(
        {"visual": visual, "fc": torch.nn.Linear(cfg.model.side.dim, cfg.model.num_classes)}
    )
    m = cfg.data.num_local_frames

    def forward(video: torch.Tensor) -> torch.Tensor:
        b, t = video.shape[:2]
        frames = video.reshape(b * t, m * 3, *video.shape[-2:])  # their (bt, m*c, h, w)
        return model["fc"](model["visual"](frames))

    return model, forward


def build_full_finetune(cfg: Any) -> tuple[torch.nn.Module, Any]:
    """The baseline side-tuning is measured against: the same CLIP tower fully fine-tuned
    (every weight trainable, fp32 master weights under autocast), its pooled per-frame
    embeddings averaged over time into a linear classifier, on the centre frame of each
    segment. Not a model tdsclip trains; it shows what the frozen tower saves."""
    import open_clip
    from open_clip.transformer import QuickGELU, VisionTransformer

    name = cfg.model.backbone.name
    dims = _tower_dims(cfg)
    embed = open_clip.get_model_config(name)["embed_dim"] if name else dims["width"]
    visual = VisionTransformer(
        image_size=dims["image_size"],
        patch_size=dims["patch_size"],
        width=dims["width"],
        layers=dims["layers"],
        heads=dims["heads"],
        mlp_ratio=dims["mlp_ratio"],
        output_dim=embed,
        act_layer=QuickGELU,
    )
    model = torch.nn.ModuleDict(
        {"visual": visual, "fc": torch.nn.Linear(embed, cfg.model.num_classes)}
    )
    centre = cfg.data.num_local_frames // 2

    def forward(video: torch.Tensor) -> torch.Tensor:  # (B, T, M, 3, H, W)
        b, t = video.shape[:2]
        frames = video[:, :, centre].flatten(0, 1)  # (BT, 3, H, W)
        features = model["visual"](frames).view(b, t, -1).mean(1)  # (B, E)
        return model["fc"](features)

    return model, forward


def floor_backbone(cfg: Any, device: torch.device, dtype: torch.dtype | None):
    """Our frozen tower alone, on ``device``, its weights cast to ``dtype`` as training does:
    the floor that the reference's and the baseline's processes time beside their step."""
    from tdsclip.models import build_backbone

    backbone = build_backbone(cfg.model).to(device)
    return backbone.cast_weights(dtype) if dtype is not None else backbone
