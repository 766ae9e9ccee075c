"""The authors' TDS-CLIP checkpoints (BBYL9413/TDS-CLIP layout) as tdsclip models: key
renaming, architecture inference and loading.

``from_reference`` builds our model with an authors' checkpoint loaded; ``tdsclip.convert`` is
its command line, which writes a tdsclip model file.

Shape legend:
    D backbone width, P patch size, d side width, k temporal kernel size.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from tdsclip.errors import CheckpointError, short_reason
from tdsclip.models.factory import build_model
from tdsclip.models.tdsclip import TDSCLIP

# Per-block renames: reference suffix -> (our suffix, reshape). 1x1(x1) convolutions become
# Linear weights and the (3,1,1) depthwise convolution a (d, k) weight.
_squeeze_conv: Callable[[Tensor], Tensor] = lambda w: w.reshape(w.shape[0], -1)  # noqa: E731
_BLOCK_KEYS: dict[str, tuple[str, Callable[[Tensor], Tensor] | None]] = {
    "bn_1": ("conv_norm", None),
    "conv.0.weight": ("temporal.pw1.weight", _squeeze_conv),
    "conv.0.bias": ("temporal.pw1.bias", None),
    "conv.1.weight": ("temporal.dw.weight", _squeeze_conv),
    "conv.1.bias": ("temporal.dw.bias", None),
    "conv.2.weight": ("temporal.pw2.weight", _squeeze_conv),
    "conv.2.bias": ("temporal.pw2.bias", None),
    "mse.conv1.weight": ("td.reduce.weight", _squeeze_conv),
    "mse.bn1": ("td.reduce_norm", None),
    "mse.conv2.weight": ("td.expand.weight", _squeeze_conv),
    "mse.bn2": ("td.expand_norm", None),
    "ln_1": ("attn_norm", None),
    "attn.in_proj_weight": ("attn.qkv.weight", None),
    "attn.in_proj_bias": ("attn.qkv.bias", None),
    "attn.out_proj": ("attn.proj", None),
    "bn_2": ("mlp_norm", None),
    "mlp.fc1": ("mlp.fc1", None),
    "mlp.fc2": ("mlp.fc2", None),
}
_TOP_KEYS: dict[str, str] = {
    "visual.side_conv1": "side.stem.centre_conv",
    "visual.side_pre_bn3d": "side.stem.centre_norm",
    "visual.side_conv1_c5": "side.stem.motion_conv",
    "visual.side_pre_bn3d_c5": "side.stem.motion_norm",
    "visual.transformer.side_spatial_position_embeddings": "side.pos_embed",
    "visual.side_post_bn": "side.head.norm",
    "fc": "side.head.fc",
}
_BACKBONE_PARTS = (
    "conv1.",
    "class_embedding",
    "positional_embedding",
    "ln_pre.",
    "transformer.resblocks.",
)


# Keys every authors' TDS-CLIP checkpoint has (the architecture is read off them).
REQUIRED_KEYS = (
    "visual.conv1.weight",
    "visual.positional_embedding",
    "visual.side_conv1.weight",
    "fc.weight",
)


class ConversionError(CheckpointError, KeyError):
    """An authors' checkpoint whose keys do not map onto tdsclip's model."""

    def __str__(self) -> str:  # KeyError would show the message quoted
        return str(self.args[0]) if self.args else ""


def _reference_state(checkpoint: str | Path | Mapping[str, Any]) -> dict[str, Tensor]:
    """The state dict of an authors' checkpoint (a path or the loaded dict), ``module.``
    prefixes removed; anything else is a CheckpointError saying what was expected."""
    name = str(checkpoint) if isinstance(checkpoint, (str, Path)) else "the checkpoint"
    if isinstance(checkpoint, (str, Path)):
        checkpoint = _load(Path(checkpoint))
    expected = "expected {'model_state_dict': {...}} with keys such as " + ", ".join(
        REQUIRED_KEYS[::2]
    )
    if isinstance(checkpoint, Mapping) and str(checkpoint.get("format", "")).startswith("tdsclip"):
        raise CheckpointError(
            f"{name} is a tdsclip checkpoint already, not an authors' one",
            hint="give it to tdsclip.eval or tdsclip.predict as it is",
        )
    state = (
        checkpoint.get("model_state_dict", checkpoint) if isinstance(checkpoint, Mapping) else None
    )
    if not isinstance(state, Mapping) or not state:
        raise CheckpointError(f"{name} is not an authors' TDS-CLIP checkpoint: {expected}; found "
                              f"a {type(checkpoint).__name__} without tensors")  # fmt: skip
    state = {str(k).removeprefix("module."): v for k, v in state.items()}
    if missing := [k for k in REQUIRED_KEYS if k not in state]:
        raise CheckpointError(
            f"{name} is not an authors' TDS-CLIP checkpoint: {expected}; found {len(state)} keys "
            f"such as {', '.join(list(state)[:3])}, without {', '.join(missing)}"
        )
    return state


def _load(path: Path) -> Any:
    if not path.is_file():
        raise CheckpointError(f"{path} not found", hint="give the path of an authors' .pt file")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # truncated file, not a torch file
        first = short_reason(e)
        raise CheckpointError(f"{path} cannot be read ({first})") from e


def _rename(key: str) -> tuple[str, Callable[[Tensor], Tensor] | None] | None:
    """Our key for a reference key (and an optional reshape), or None if unknown."""
    if m := re.fullmatch(r"visual\.transformer\.side_transformer\.(\d+)\.(.+)", key):
        index, rest = m.groups()
        for old, (new, fn) in _BLOCK_KEYS.items():
            if rest == old or rest.startswith(old + "."):
                return f"side.blocks.{index}.{new}{rest[len(old) :]}", fn
        return None
    if m := re.fullmatch(r"visual\.transformer\.side_(lns|linears)\.(\d+)\.(.+)", key):
        kind, index, rest = m.groups()
        return f"side.proj.{index}.{'norm' if kind == 'lns' else 'linear'}.{rest}", None
    for old, new in _TOP_KEYS.items():
        if key == old or key.startswith(old + "."):
            return new + key[len(old) :], None
    tower_key = key.removeprefix("visual.")
    if key.startswith("visual.") and tower_key.startswith(_BACKBONE_PARTS):
        return f"backbone.{tower_key}", None
    return None


def infer_architecture(state: Mapping[str, Tensor]) -> dict[str, Any]:
    """Architecture keywords of a reference checkpoint, read off its tensor shapes."""
    state = {k.removeprefix("module."): v for k, v in state.items()}
    conv1 = state["visual.conv1.weight"]  # (D, 3, P, P)
    width, patch = conv1.shape[0], conv1.shape[-1]
    grid = round((state["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    layers = len({k.split(".")[3] for k in state if k.startswith("visual.transformer.resblocks.")})
    block = "visual.transformer.side_transformer.{}.mse.conv1.weight"
    td_layers = [i for i in range(layers) if block.format(i) in state]
    side_dim = state["visual.side_conv1.weight"].shape[0]
    motion = state.get("visual.side_conv1_c5.weight")
    return {
        "image_size": grid * patch,
        "patch_size": patch,
        "width": width,
        "layers": layers,
        "heads": width // 64,
        "side_dim": side_dim,
        "num_diff": 1 if motion is None else motion.shape[1] // 3 + 1,
        "num_classes": state["fc.weight"].shape[0],
        "td_layers": td_layers,
        "td_reduction": side_dim // state[block.format(td_layers[0])].shape[0] if td_layers else 16,
    }


def convert_state(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename and reshape a reference state dict into our ``TDSCLIP`` keys.

    Unknown keys are an error listing them. The reference's ``num_batches_tracked`` counters and
    BatchNorm statistics are kept.
    """
    out: dict[str, Tensor] = {}
    unknown = []
    for key, value in state.items():
        renamed = _rename(key.removeprefix("module."))
        if renamed is None:
            unknown.append(key)
            continue
        new_key, fn = renamed
        out[new_key] = fn(value) if fn is not None else value
    if unknown:
        raise ConversionError(
            f"unexpected keys in the reference checkpoint: {sorted(unknown)}",
            hint="is it a TDS-CLIP checkpoint of the authors' released code?",
        )
    return out


def from_reference(
    checkpoint: str | Path | Mapping[str, Any],
    *,
    image_size: int | None = None,
    patch_size: int | None = None,
    width: int | None = None,
    layers: int | None = None,
    heads: int | None = None,
    side_dim: int | None = None,
    T: int | None = None,  # the reference's name for the number of frames
    num_diff: int | None = None,
    num_classes: int | None = None,
) -> TDSCLIP:
    """Our TDS-CLIP with an authors' checkpoint loaded, in eval mode.

    ``checkpoint`` is a path or the loaded dict (``{'model_state_dict': ...}`` or the state
    dict itself, with or without the DDP ``module.`` prefix). The keywords default to what the
    weights imply; given ones must agree with it. ``T`` is accepted for symmetry with the
    reference: our model reads the number of frames from its input.
    """
    state = _reference_state(checkpoint)
    arch = infer_architecture(state)
    given = {
        "image_size": image_size,
        "patch_size": patch_size,
        "width": width,
        "layers": layers,
        "heads": heads,
        "side_dim": side_dim,
        "num_diff": num_diff,
        "num_classes": num_classes,
    }
    for key, value in given.items():
        if value is None:
            continue
        if key in ("heads", "image_size") or value == arch[key]:
            arch[key] = value  # heads and image size are not fully pinned by the weights
            continue
        raise ValueError(f"{key}={value} disagrees with the checkpoint, which has {arch[key]}")
    if T is not None and T < 1:
        raise ValueError(f"T must be positive, got {T}")
    model = model_from_arch(arch)
    load_converted(model, convert_state(state))
    return model.eval()


def reference_model_config(arch: Mapping[str, Any]) -> dict[str, Any]:
    """The ``model`` config (as in ``configs/model/``) of a converted architecture."""
    return {
        "backbone": {
            "name": None,
            "image_size": arch["image_size"],
            "patch_size": arch["patch_size"],
            "width": arch["width"],
            "layers": arch["layers"],
            "heads": arch["heads"],
            "mlp_ratio": 4.0,
            "quick_gelu": True,
            "pretrained": None,
        },
        "side": {
            "dim": arch["side_dim"],
            "heads": None,
            "mlp_ratio": 4.0,
            "sme": arch["num_diff"] > 1,
            "motion_weight": 0.5,
            "centre_weight": 1.0,
            "layer_mix": 0.5,
            "temporal_kernel": 3,
            "td_layers": list(arch["td_layers"]),
            "td_kind": "maxpool",
            "td_kernel": 3,
            "td_reduction": arch["td_reduction"],
            "drop_path_rate": 0.0,
            "head_dropout": 0.0,
        },
        "num_classes": arch["num_classes"],
        "num_local_frames": arch["num_diff"],
    }


def model_from_arch(arch: Mapping[str, Any]) -> TDSCLIP:
    """An empty (random-init) model of a converted architecture."""
    return build_model(reference_model_config(arch))


def load_converted(model: TDSCLIP, state: Mapping[str, Tensor]) -> None:
    """Strict load with an error that lists missing and unexpected keys."""
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ConversionError(
            f"converted checkpoint does not fit the model; missing: {result.missing_keys}; "
            f"unexpected: {result.unexpected_keys}"
        )
