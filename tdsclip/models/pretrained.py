"""Loading pretrained CLIP image-tower weights from a local file (never from the network).

Accepted files:
- an OpenAI CLIP ``.pt`` archive (TorchScript, as ``clip.load`` downloads it) or the same
  weights saved as a plain state dict;
- an open_clip checkpoint: a plain state dict (``open_clip_pytorch_model.bin``), a
  ``.safetensors`` file, or a training checkpoint ``{"state_dict": ...}`` (``module.`` prefix ok).
"""

from __future__ import annotations

import logging
import warnings
import zipfile
from pathlib import Path

import torch
from torch import Tensor

from tdsclip.errors import MissingFileError, WeightsError, short_reason
from tdsclip.models.backbone import UNUSED_TOWER_KEYS, FrozenCLIPViT

log = logging.getLogger(__name__)

DOWNLOAD_HINT = (
    "tdsclip never downloads at run time. On a machine with internet access fetch the OpenAI "
    "archive (e.g. `clip.load('ViT-B/16', download_root='weights')` writes weights/ViT-B-16.pt)"
    " or an open_clip checkpoint (`open_clip.create_model('ViT-B-16', pretrained='openai', "
    "cache_dir='weights')`), copy the file to this path, or set "
    "model.backbone.pretrained=/path/to/file. See README, 'Pretrained CLIP weights'."
)


def _read_file(path: Path) -> dict[str, Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            is_torchscript = any(name.endswith("constants.pkl") for name in archive.namelist())
        if is_torchscript:  # OpenAI's archives; torch.jit is deprecated but reads them
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                return torch.jit.load(str(path), map_location="cpu").state_dict()
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "model_state_dict"):
            if key in obj and isinstance(obj[key], dict):
                return obj[key]
        return obj
    raise WeightsError(f"{path}: not a CLIP state dict (got {type(obj).__name__})")


def read_clip_tower_state(path: str | Path) -> dict[str, Tensor]:
    """The image tower's tensors of a CLIP checkpoint file, keyed like ``FrozenCLIPViT``."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise MissingFileError(
            f"pretrained CLIP weights not found at {path} (model.backbone.pretrained)",
            hint=DOWNLOAD_HINT,
        )
    try:
        state = _read_file(path)
    except (RuntimeError, OSError, EOFError, ValueError) as e:
        if isinstance(e, WeightsError):
            raise
        first = short_reason(e)
        raise WeightsError(
            f"{path} cannot be read as CLIP weights ({first})",
            hint="the file may be truncated or of another kind; download it again",
        ) from e
    tower: dict[str, Tensor] = {}
    for key, value in state.items():
        key = key.removeprefix("module.")
        if not key.startswith("visual."):
            continue
        key = key.removeprefix("visual.")
        if key.startswith(UNUSED_TOWER_KEYS):
            continue
        tower[key] = value
    if not tower:
        raise WeightsError(f"{path}: no 'visual.*' image-tower weights in this file")
    return tower


def load_backbone_weights(backbone: FrozenCLIPViT, path: str | Path) -> None:
    """Load a local CLIP checkpoint into ``backbone``; mismatches are errors that list keys."""
    tower = read_clip_tower_state(path)
    own = backbone.state_dict()
    missing = sorted(set(own) - set(tower))
    unexpected = sorted(set(tower) - set(own))
    wrong_shape = sorted(
        f"{k}: file {tuple(tower[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(own) & set(tower)
        if tower[k].shape != own[k].shape
    )
    if missing or unexpected or wrong_shape:
        raise WeightsError(
            f"{path} does not fit the configured backbone "
            f"(width {backbone.width}, {backbone.num_layers} layers, patch {backbone.patch_size},"
            f" image {backbone.image_size}): missing: {_few(missing)}; unexpected: "
            f"{_few(unexpected)}; wrong shape: {_few(wrong_shape)}",
            hint="check model.backbone.name (and model.backbone.* dims) against the file",
        )
    backbone.load_state_dict(tower, strict=True)  # copies into the parameters' own dtype
    log.info("loaded CLIP image tower from %s (%d tensors)", path, len(tower))


def _few(items: list[str], n: int = 5) -> str:
    """A list shortened for a one-line message: the first ``n`` and how many more."""
    more = f" and {len(items) - n} more" if len(items) > n else ""
    return f"{items[:n]}{more}"
