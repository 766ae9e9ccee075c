"""Shared fixtures: tiny random-init TDS-CLIP models and the reference fixture."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch
from data_fixtures import SYNTH, write_motion

from tdsclip.data.synthetic import make_motion_dataset
from tdsclip.models import TDSCLIP, create_backbone, create_tdsclip

# The authors' tiny checkpoint lives in the project's shared folder beside the checkout (CI
# lays it there); TDSCLIP_REFERENCE_FIXTURE points elsewhere.
REFERENCE_FIXTURE = Path(
    os.environ.get(
        "TDSCLIP_REFERENCE_FIXTURE",
        Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "reference_tiny.pt",
    )
)

TINY_BACKBONE = dict(image_size=32, patch_size=8, width=64, layers=3, heads=2)


def tiny_model(**side: Any) -> TDSCLIP:
    """A 3-layer, width-64 backbone on 32x32 images with a side network of width 32."""
    torch.manual_seed(0)
    backbone = create_backbone(name=None, **TINY_BACKBONE)
    side = {"num_classes": 5, "side_dim": 32, "side_heads": 2, "td_reduction": 4, **side}
    return create_tdsclip(backbone=backbone, **side)


def tiny_video(batch: int = 2, frames: int = 4, local: int = 5, size: int = 32) -> torch.Tensor:
    return torch.randn(
        batch, frames, local, 3, size, size, generator=torch.Generator().manual_seed(1)
    )


@pytest.fixture
def reference() -> dict[str, Any]:
    if not REFERENCE_FIXTURE.is_file():
        if os.environ.get("CI"):
            pytest.fail(f"reference fixture missing in CI: {REFERENCE_FIXTURE}")
        pytest.skip(f"reference fixture missing: {REFERENCE_FIXTURE}")
    return torch.load(REFERENCE_FIXTURE, weights_only=False)


@pytest.fixture(scope="session")
def motion_root(tmp_path_factory) -> Path:
    """The training tests' synthetic motion dataset (``SYNTH``), written once per session."""
    root = tmp_path_factory.mktemp("data") / "motion"
    return make_motion_dataset(root, codec="h264", **SYNTH)


@pytest.fixture(scope="session")
def small_motion_root(tmp_path_factory) -> Path:
    """The data tests' tiny motion dataset (``data_fixtures.write_motion``)."""
    return write_motion(tmp_path_factory.mktemp("small_motion"))
