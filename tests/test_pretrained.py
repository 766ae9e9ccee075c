"""Loading CLIP image-tower weights from local files in every supported layout."""

from __future__ import annotations

import open_clip
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from tdsclip.models import build_model, create_backbone
from tdsclip.models.pretrained import load_backbone_weights

TOWER = dict(image_size=32, patch_size=8, width=64, layers=2, heads=2)


def _tiny_clip(seed: int = 3) -> open_clip.CLIP:
    """A real open_clip CLIP (image + text towers) at toy size, random weights."""
    torch.manual_seed(seed)
    return open_clip.CLIP(
        embed_dim=32,
        vision_cfg={
            **{k: TOWER[k] for k in ("image_size", "patch_size", "width", "layers")},
            "head_width": TOWER["width"] // TOWER["heads"],
        },
        text_cfg={"context_length": 8, "vocab_size": 100, "width": 32, "heads": 2, "layers": 1},
        quick_gelu=True,
    )


def _assert_tower_equal(backbone, clip: open_clip.CLIP) -> None:
    theirs = clip.visual.state_dict()
    ours = backbone.state_dict()
    assert ours, "empty backbone"
    for key, value in ours.items():
        torch.testing.assert_close(value, theirs[key], atol=0, rtol=0, msg=key)


class _ScriptHolder(nn.Module):
    """Shaped like the OpenAI archive: the image tower under ``visual``."""

    def __init__(self, visual: nn.Module) -> None:
        super().__init__()
        self.visual = visual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.visual(x)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
@pytest.mark.parametrize(
    "layout", ["state_dict", "open_clip_training", "safetensors", "torchscript"]
)
def test_load_each_layout(layout, tmp_path):
    clip = _tiny_clip().eval()
    path = tmp_path / f"clip_{layout}.pt"
    if layout == "state_dict":
        torch.save({k: v.half() for k, v in clip.state_dict().items()}, path)  # OpenAI: fp16
    elif layout == "open_clip_training":
        state = {f"module.{k}": v for k, v in clip.state_dict().items()}
        torch.save({"epoch": 3, "name": "run", "state_dict": state}, path)
    elif layout == "safetensors":
        path = path.with_suffix(".safetensors")
        save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, str(path))
    else:
        holder = _ScriptHolder(clip.visual)
        traced = torch.jit.trace(holder, torch.randn(1, 3, 32, 32), check_trace=False)
        torch.jit.save(traced, str(path))
    backbone = create_backbone(name=None, pretrained=str(path), **TOWER)
    if layout == "state_dict":
        clip = clip.half().float()  # compare against the fp16-rounded weights
    _assert_tower_equal(backbone, clip)
    # The loaded tower computes what open_clip's tower computes before ln_post / proj.
    images = torch.randn(2, 3, 32, 32)
    ours = backbone(images)[-1]
    clip.visual.output_tokens = True
    with torch.no_grad():
        x = clip.visual.conv1(images).flatten(2).transpose(1, 2)
        cls = clip.visual.class_embedding.expand(2, 1, -1)
        x = clip.visual.ln_pre(torch.cat([cls, x], 1) + clip.visual.positional_embedding)
        theirs = clip.visual.transformer(x)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_missing_file_says_where_to_put_it(tmp_path):
    path = tmp_path / "weights" / "ViT-B-16.pt"
    with pytest.raises(FileNotFoundError) as err:
        create_backbone(name=None, pretrained=str(path), **TOWER)
    assert str(path) in str(err.value)
    assert "model.backbone.pretrained" in str(err.value)


def test_mismatched_tower_lists_keys(tmp_path):
    path = tmp_path / "clip.pt"
    torch.save(_tiny_clip().state_dict(), path)
    wider = create_backbone(name=None, **{**TOWER, "width": 96, "heads": 3})
    with pytest.raises(ValueError, match=r"wrong shape: \['class_embedding"):
        load_backbone_weights(wider, path)
    deeper = create_backbone(name=None, **{**TOWER, "layers": 3})
    with pytest.raises(ValueError, match=r"missing: \['transformer.resblocks.2"):
        load_backbone_weights(deeper, path)


def test_not_a_clip_file(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"encoder.weight": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match="no 'visual"):
        create_backbone(name=None, pretrained=str(path), **TOWER)


def test_build_model_from_config_loads_weights(tmp_path):
    clip = _tiny_clip()
    path = tmp_path / "clip.pt"
    torch.save(clip.state_dict(), path)
    cfg = {
        "backbone": {
            **TOWER, "name": None, "mlp_ratio": None, "quick_gelu": True, "pretrained": str(path)
        },
        "side": {
            "dim": 32, "heads": None, "mlp_ratio": 4.0, "sme": True, "motion_weight": 0.5,
            "centre_weight": 1.0, "layer_mix": 0.5, "temporal_kernel": 3, "td_layers": "all",
            "td_kind": "maxpool", "td_kernel": 3, "td_reduction": 4, "drop_path_rate": 0.0,
            "head_dropout": 0.0,
        },
        "num_classes": 3,
        "num_local_frames": 5,
    }  # fmt: skip
    model = build_model(cfg)
    _assert_tower_equal(model.backbone, clip)
    assert model.side.td_layers == (0, 1)
