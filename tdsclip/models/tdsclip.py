"""TDS-CLIP: a frozen CLIP ViT and the trainable side network next to it.

Shape legend:
    B clips, T frames, M local frames per segment, H = W image size, N patch tokens,
    D backbone width, d side width, BT = B * T.
"""

from __future__ import annotations

from collections.abc import Iterator

from torch import Tensor, nn

from tdsclip.models.backbone import FrozenCLIPViT
from tdsclip.models.side import SideNetwork


class TDSCLIP(nn.Module):
    """Video classifier: ``forward(video (B, T, M, 3, H, W) float) -> logits (B, classes)``.

    The backbone sees the centre frame of every segment; the side network sees all M local
    frames and the backbone's per-block tokens. Only ``side`` holds trainable parameters; it is
    the module to hand to the optimizer, to wrap in DistributedDataParallel and to checkpoint.
    """

    def __init__(self, backbone: FrozenCLIPViT, side: SideNetwork) -> None:
        super().__init__()
        if backbone.num_layers != side.num_layers:
            raise ValueError(
                f"backbone has {backbone.num_layers} blocks, side network {side.num_layers}"
            )
        if backbone.grid_size != side.grid_size:
            raise ValueError(f"grid mismatch: backbone {backbone.grid_size}, side {side.grid_size}")
        self.backbone = backbone
        self.side = side

    def backbone_layers(self, video: Tensor) -> Iterator[Tensor]:
        """Lazily computed frozen tokens of the centre frames: L x (BT, 1+N, D)."""
        m = video.shape[2]
        centre = video[:, :, m // 2].flatten(0, 1)  # (BT, 3, H, W)
        return self.backbone.iter_layers(centre)

    def forward_features(self, video: Tensor) -> Tensor:
        """Pooled side features (B, d)."""
        return self.side.forward_features(video, self.backbone_layers(video))

    def forward_head(self, pooled: Tensor) -> Tensor:
        return self.side.forward_head(pooled)

    def forward(self, video: Tensor) -> Tensor:
        if video.ndim != 6:
            raise ValueError(f"expected a (B, T, M, 3, H, W) clip tensor, got {tuple(video.shape)}")
        # Through ``self.side(...)`` so that a DistributedDataParallel wrapper placed on
        # ``self.side`` sees the call.
        return self.side(video, self.backbone_layers(video))
