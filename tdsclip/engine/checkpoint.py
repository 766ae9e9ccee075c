"""Checkpoint files: plain dicts, written atomically.

Two kinds share one layout for the model part, so that ``eval`` and ``predict`` read both:

- a **model file** (``tdsclip.convert`` writes one): ``{"format": "tdsclip.model", ...}``
- a **training checkpoint** (``last.pt`` / ``best.pt`` of a run): the model part plus the
  optimizer, scheduler, scaler, counters, RNG states and the resolved run config.

Model part: ``model_config`` (the ``model`` config group, enough for ``build_model``),
``side`` (the side network's state dict: every trainable weight and BatchNorm statistic) and,
in model files only, ``backbone`` (the frozen tower; training checkpoints leave it out since
it is the pretrained file the config points at).
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

import tdsclip
from tdsclip.engine.launch import code_revision
from tdsclip.errors import CheckpointError, short_reason
from tdsclip.models.factory import build_model
from tdsclip.models.tdsclip import TDSCLIP

log = logging.getLogger(__name__)

MODEL_FORMAT = "tdsclip.model"
TRAIN_FORMAT = "tdsclip.train"


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename over ``path``.

    A crash or preemption mid-write leaves the previous file intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def unwrap(module: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel / torch.compile wrapper."""
    while True:
        if hasattr(module, "module") and isinstance(module.module, nn.Module):
            module = module.module
        elif hasattr(module, "_orig_mod"):
            module = module._orig_mod
        else:
            return module


def save_model_file(
    path: str | Path,
    model: TDSCLIP,
    *,
    model_config: Mapping[str, Any],
    source: str = "",
    include_backbone: bool = True,
) -> None:
    """Write a self-contained model file (side network, frozen tower, architecture)."""
    atomic_save(
        {
            "format": MODEL_FORMAT,
            "code_version": tdsclip.__version__,
            "code_revision": code_revision(),
            "model_config": dict(model_config),
            "side": unwrap(model.side).state_dict(),
            "backbone": model.backbone.state_dict() if include_backbone else None,
            "source": source,
        },
        path,
    )


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a model file or training checkpoint (our own files: full unpickling allowed).

    A missing, unreadable (truncated) or foreign file is a CheckpointError that names it and
    the way out.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint not found: {path}",
            hint="give a run's checkpoints/best.pt or last.pt, or a file tdsclip.convert wrote",
        )
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # torch raises RuntimeError, EOFError, UnpicklingError, ...
        first = short_reason(e)
        raise CheckpointError(
            f"{path} cannot be read ({first}): it is truncated or not a torch file",
            hint="use best.pt (or last.pt) beside it, e.g. trainer.resume=<run>/checkpoints/"
            "best.pt, or start fresh with another run_id",
        ) from e
    if not isinstance(ckpt, dict) or ckpt.get("format") not in (MODEL_FORMAT, TRAIN_FORMAT):
        raise CheckpointError(
            f"{path} is not a tdsclip checkpoint",
            hint="an authors' checkpoint is converted first: python -m tdsclip.convert SRC DST",
        )
    return ckpt


def load_model_file(
    path: str | Path, *, pretrained: str | None = None, map_location: str = "cpu"
) -> TDSCLIP:
    """A ready model (eval mode) from a model file or training checkpoint on disk."""
    return model_from_checkpoint(load_checkpoint(path), pretrained=pretrained).to(map_location)


def model_from_checkpoint(ckpt: Mapping[str, Any], *, pretrained: str | None = None) -> TDSCLIP:
    """A ready model (eval mode, CPU) from a loaded model file or training checkpoint.

    A training checkpoint has no tower weights: they come from ``pretrained`` or else from the
    ``model.backbone.pretrained`` path recorded in its config.
    """
    cfg = {**ckpt["model_config"], "backbone": dict(ckpt["model_config"]["backbone"])}
    if ckpt.get("backbone") is not None:
        cfg["backbone"]["pretrained"] = None
    elif pretrained is not None:
        cfg["backbone"]["pretrained"] = pretrained
    model = build_model(cfg)
    if ckpt.get("backbone") is not None:
        model.backbone.load_state_dict(ckpt["backbone"])
    model.side.load_state_dict(ckpt["side"])
    return model.eval()
