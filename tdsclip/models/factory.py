"""Building TDS-CLIP: a typed Python constructor and the one function that reads the config."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from tdsclip.models.backbone import FrozenCLIPViT, open_clip_vision_dims
from tdsclip.models.pretrained import load_backbone_weights
from tdsclip.models.side import SideNetwork
from tdsclip.models.td_adapter import TD_KINDS, TDKind
from tdsclip.models.tdsclip import TDSCLIP

log = logging.getLogger(__name__)

RANDOM_TOWER_SEED = 0


BACKBONE_DIM_KEYS = ("image_size", "patch_size", "width", "layers", "heads", "mlp_ratio")


def backbone_dims(name: str | None, **overrides: int | float | None) -> dict[str, Any]:
    """Tower dims (``BACKBONE_DIM_KEYS``) of an open_clip model name, the non-None
    ``overrides`` replacing them; with ``name=None`` all are needed."""
    dims: dict[str, Any] = open_clip_vision_dims(name) if name else {"mlp_ratio": 4.0}
    if unknown := sorted(set(overrides) - set(BACKBONE_DIM_KEYS)):
        raise TypeError(f"unknown backbone dims {unknown}")
    dims.update({k: v for k, v in overrides.items() if v is not None})
    if missing := [k for k in BACKBONE_DIM_KEYS if dims.get(k) is None]:
        raise ValueError(f"backbone needs a model name or explicit {missing}")
    return dims


def create_backbone(
    *,
    name: str | None = "ViT-B-16",
    image_size: int | None = None,
    patch_size: int | None = None,
    width: int | None = None,
    layers: int | None = None,
    heads: int | None = None,
    mlp_ratio: float | None = None,
    quick_gelu: bool = True,
    pretrained: str | None = None,
) -> FrozenCLIPViT:
    """A frozen CLIP tower from an open_clip model name, explicit dims overriding it.

    With ``name=None`` every dim must be given (tiny test backbones). ``pretrained`` is a
    local weights file; ``None`` gives a random tower, the same one every time (seed 0).
    """
    dims = backbone_dims(
        name,
        image_size=image_size,
        patch_size=patch_size,
        width=width,
        layers=layers,
        heads=heads,
        mlp_ratio=mlp_ratio,
    )
    # A tower without pretrained weights is always the same one: training checkpoints never
    # store the frozen tower, so rebuilding it from the config must give the same weights.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_TOWER_SEED)
        backbone = FrozenCLIPViT(quick_gelu=quick_gelu, **dims)
    if pretrained:
        load_backbone_weights(backbone, pretrained)
    else:
        log.info("backbone %s: no pretrained weights given, random (seed 0) tower", name)
    return backbone


def create_tdsclip(
    *,
    num_classes: int,
    backbone: FrozenCLIPViT,
    side_dim: int = 320,
    side_heads: int | None = None,
    side_mlp_ratio: float = 4.0,
    num_local_frames: int = 5,
    sme: bool = True,
    motion_weight: float = 0.5,
    centre_weight: float = 1.0,
    layer_mix: float = 0.5,
    temporal_kernel: int = 3,
    td_layers: Sequence[int] | None = None,
    td_kind: TDKind = "maxpool",
    td_kernel: int = 3,
    td_reduction: int = 16,
    drop_path_rate: float = 0.0,
    head_dropout: float = 0.0,
) -> TDSCLIP:
    """TDS-CLIP around ``backbone``; ``td_layers=None`` puts a TD-Adapter in every block."""
    side = SideNetwork(
        num_classes=num_classes,
        backbone_width=backbone.width,
        num_layers=backbone.num_layers,
        patch_size=backbone.patch_size,
        grid_size=backbone.grid_size,
        dim=side_dim,
        num_heads=side_heads,
        mlp_ratio=side_mlp_ratio,
        num_local_frames=num_local_frames,
        sme=sme,
        motion_weight=motion_weight,
        centre_weight=centre_weight,
        layer_mix=layer_mix,
        temporal_kernel=temporal_kernel,
        td_layers=td_layers,
        td_kind=td_kind,
        td_kernel=td_kernel,
        td_reduction=td_reduction,
        drop_path_rate=drop_path_rate,
        head_dropout=head_dropout,
    )
    return TDSCLIP(backbone, side)


def parse_td_layers(value: Any, num_layers: int) -> list[int] | None:
    """``all`` -> None (every layer), ``none`` -> [], or a list of 0-based layer indices."""
    if value is None or value == "all":
        return None
    if value == "none":
        return []
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ValueError(f"td_layers must be 'all', 'none' or a list of indices, got {value!r}")
    layers = [int(i) for i in value]
    if bad := [i for i in layers if not 0 <= i < num_layers]:
        raise ValueError(f"td_layers {bad} outside 0..{num_layers - 1} (indices are 0-based)")
    return layers


def build_backbone(cfg: Mapping[str, Any]) -> FrozenCLIPViT:
    """The frozen tower alone from the ``model`` config group."""
    b = cfg["backbone"]
    return create_backbone(
        name=b["name"],
        image_size=b["image_size"],
        patch_size=b["patch_size"],
        width=b["width"],
        layers=b["layers"],
        heads=b["heads"],
        mlp_ratio=b["mlp_ratio"],
        quick_gelu=b["quick_gelu"],
        pretrained=b["pretrained"],
    )


def build_model(cfg: Mapping[str, Any]) -> TDSCLIP:
    """TDS-CLIP from the ``model`` config group (see ``configs/model/*.yaml``)."""
    s = cfg["side"]
    backbone = build_backbone(cfg)
    if s["td_kind"] not in TD_KINDS:
        raise ValueError(f"model.side.td_kind must be one of {TD_KINDS}, got {s['td_kind']!r}")
    return create_tdsclip(
        num_classes=cfg["num_classes"],
        backbone=backbone,
        side_dim=s["dim"],
        side_heads=s["heads"],
        side_mlp_ratio=s["mlp_ratio"],
        num_local_frames=cfg["num_local_frames"],
        sme=s["sme"],
        motion_weight=s["motion_weight"],
        centre_weight=s["centre_weight"],
        layer_mix=s["layer_mix"],
        temporal_kernel=s["temporal_kernel"],
        td_layers=parse_td_layers(s["td_layers"], backbone.num_layers),
        td_kind=s["td_kind"],
        td_kernel=s["td_kernel"],
        td_reduction=s["td_reduction"],
        drop_path_rate=s["drop_path_rate"],
        head_dropout=s["head_dropout"],
    )
