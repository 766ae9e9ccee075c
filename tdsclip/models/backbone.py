"""The frozen CLIP ViT image tower.

It returns the token sequence after every residual block and never takes part in autograd:
no parameter requires a gradient, every computation runs under ``torch.no_grad()``, and the
module stays in eval mode whatever its parent does (open_clip's tower in train mode runs a
much slower and heavier path, even without gradients).

Shape legend:
    B clips, T frames, BT = B * T images, H = W image size, P patch size, g = H // P grid,
    N = g * g patch tokens, D backbone width.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from open_clip.transformer import QuickGELU, VisionTransformer
from torch import Tensor, nn

log = logging.getLogger(__name__)


class TowerLayerNorm(nn.LayerNorm):
    """LayerNorm in the activations' dtype, fp32 statistics.

    The kernels accumulate mean and variance in fp32 for bf16/fp16 input, so this computes
    what an fp32 LayerNorm computes (rounded once, to the input dtype) without the two
    full-tensor casts of open_clip's LayerNormFp32. The parameters stay fp32.
    """

    def forward(self, x: Tensor) -> Tensor:
        weight = self.weight.to(x.dtype)
        return F.layer_norm(x, self.normalized_shape, weight, self.bias.to(x.dtype), self.eps)


# Keys of an OpenAI / open_clip image tower that the side network never uses.
UNUSED_TOWER_KEYS = ("ln_post.", "proj", "attn_pool", "patch_dropout")


def open_clip_vision_dims(model_name: str) -> dict[str, int | float]:
    """Image-tower dimensions of an open_clip model name (e.g. ``ViT-B-16``, ``ViT-L-14``)."""
    import open_clip

    cfg = open_clip.get_model_config(model_name)
    if cfg is None:
        raise ValueError(
            f"unknown open_clip model {model_name!r}; see open_clip.list_models() for the names"
        )
    vision = cfg["vision_cfg"]
    if not isinstance(vision.get("layers"), int) or "timm_model_name" in vision:
        raise ValueError(f"{model_name!r} is not a plain CLIP ViT; TDS-CLIP needs one")
    width = int(vision["width"])
    head_width = int(vision.get("head_width", 64))
    return {
        "image_size": int(vision["image_size"]),
        "patch_size": int(vision["patch_size"]),
        "width": width,
        "layers": int(vision["layers"]),
        "heads": width // head_width,
        "mlp_ratio": float(vision.get("mlp_ratio", 4.0)),
    }


class FrozenCLIPViT(nn.Module):
    """CLIP ViT image tower (open_clip's blocks) that yields the tokens after every block.

    The module keeps only what the side network consumes: patch embedding, class and position
    embeddings, ``ln_pre`` and the residual blocks. Its state-dict keys are those of the
    OpenAI / open_clip ``visual.`` tower without ``ln_post`` and ``proj``.
    """

    def __init__(
        self,
        *,
        image_size: int,
        patch_size: int,
        width: int,
        layers: int,
        heads: int,
        mlp_ratio: float = 4.0,
        quick_gelu: bool = True,
    ) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not a multiple of patch {patch_size}")
        tower = VisionTransformer(
            image_size=image_size,
            patch_size=patch_size,
            width=width,
            layers=layers,
            heads=heads,
            mlp_ratio=mlp_ratio,
            output_dim=width,
            act_layer=QuickGELU if quick_gelu else nn.GELU,
            # SPEC: backbone LayerNorms compute in fp32 whatever the weights' dtype.
            norm_layer=TowerLayerNorm,
        )
        self.image_size = image_size
        self.patch_size = patch_size
        self.width = width
        self.num_layers = layers
        self.grid_size = image_size // patch_size
        self.conv1 = tower.conv1
        self.class_embedding = tower.class_embedding
        self.positional_embedding = tower.positional_embedding
        self.ln_pre = tower.ln_pre
        self.transformer = tower.transformer
        self.lock()

    def lock(self) -> FrozenCLIPViT:
        """Freeze every parameter and switch to eval mode (idempotent)."""
        self.requires_grad_(False)
        return super().train(False)

    def train(self, mode: bool = True) -> FrozenCLIPViT:
        # Deliberately ignore ``mode``: the frozen tower must never run in train mode.
        return super().train(False)

    def cast_weights(self, dtype: torch.dtype) -> FrozenCLIPViT:
        """Store matmul/conv weights in ``dtype`` once (e.g. bf16 for mixed precision).

        LayerNorm parameters stay fp32 because the LayerNorms compute in fp32.
        """
        for module in self.modules():
            if isinstance(module, nn.LayerNorm):
                continue
            for param in module.parameters(recurse=False):
                param.data = param.data.to(dtype)
        return self

    @property
    def compute_dtype(self) -> torch.dtype:
        return self.conv1.weight.dtype

    def embed(self, images: Tensor) -> Tensor:
        """Patch + class + position embedding and ``ln_pre``: (BT, 3, H, W) -> (BT, 1+N, D)."""
        with torch.no_grad(), torch.autocast(images.device.type, enabled=False):
            return self._embed(images)

    def _embed(self, images: Tensor) -> Tensor:
        x = self.conv1(images.to(self.compute_dtype))  # (BT, D, g, g)
        x = x.flatten(2).transpose(1, 2)  # (BT, N, D)
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)  # (BT, 1, D)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)  # (BT, 1+N, D)
        return self.ln_pre(x)

    def iter_layers(self, images: Tensor) -> Iterator[Tensor]:
        """Yield the (BT, 1+N, D) tokens after each block, computing each block on demand.

        Consuming the blocks one at a time lets the caller drop block i's output before
        block i+1 runs. Grad mode is disabled per step (never across a ``yield``, which
        would leak ``no_grad`` into the caller).
        """
        x = self.embed(images)
        # Autocast is switched off inside the tower: it runs in the dtype its weights were
        # cast to (``cast_weights``), with no per-op casts.
        for block in self.transformer.resblocks:
            with torch.no_grad(), torch.autocast(images.device.type, enabled=False):
                x = block(x)
            yield x

    def forward(self, images: Tensor) -> list[Tensor]:
        """All L per-block token sequences, each (BT, 1+N, D)."""
        return list(self.iter_layers(images))
