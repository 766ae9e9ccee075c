"""The trainable TDS-CLIP side network: SME-Adapter stem, TDS blocks and the head.

Everything runs on a tokens-last layout. The reference code views the side stream as a video
(B, d, T, g, g) for its BatchNorm3d and 1x1x1 / (3,1,1) convolutions; here the same functions
are computed on (B, T, N, d) without permutes: a 1x1x1 convolution is a Linear over channels,
BatchNorm over (B, T, g, g) equals BatchNorm1d over the flattened tokens, and the temporal
depthwise convolution is a sum of frames shifted along T and the max-pool a max_pool1d over T.

Shape legend:
    B clips, T frames, M local frames per segment, H = W image size, P patch size,
    g grid size, N = g * g patch tokens, D backbone width, d side width, c = d // r TD width,
    BT = B * T.

The parts have their own modules: ``sme_adapter`` (the stem), ``td_adapter``,
``tds_block`` and ``layers`` (the BatchNorms and the temporal depthwise convolution they share).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from tdsclip.models.layers import TokenBatchNorm, recompute_contexts
from tdsclip.models.ops import frozen_norm_linear
from tdsclip.models.sme_adapter import SMEStem
from tdsclip.models.td_adapter import TDKind
from tdsclip.models.tds_block import TDSBlock


class FrozenFeatureProjection(nn.Module):
    """LayerNorm(D) + Linear(D -> d) of one frozen block's tokens: (BT, 1+N, D) -> (BT, 1+N, d)."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(in_dim)
        self.linear = nn.Linear(in_dim, out_dim)
        nn.init.normal_(self.linear.weight, std=(2 * out_dim) ** -0.5)

    def forward(self, x: Tensor) -> Tensor:
        norm, linear = self.norm, self.linear
        return frozen_norm_linear(x, norm.weight, norm.bias, linear.weight, linear.bias, norm.eps)


class ClassifierHead(nn.Module):
    """BatchNorm, mean over T and the grid, dropout, Linear: (BT, N, d) -> (B, classes)."""

    def __init__(self, dim: int, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm = TokenBatchNorm(dim)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(dim, num_classes)

    def pool(self, x: Tensor, num_frames: int) -> Tensor:
        bt, n, d = x.shape
        x = self.norm(x.view(bt // num_frames, num_frames * n, d))  # (B, T*N, d)
        return x.mean(dim=1)  # (B, d)

    def forward(self, pooled: Tensor) -> Tensor:
        return self.fc(self.drop(pooled))


class SideNetwork(nn.Module):
    """Stem, per-layer projections, TDS blocks and head: everything TDS-CLIP trains.

    ``forward(video, layers)`` takes the clip (B, T, M, 3, H, W) and an iterable of the
    frozen tower's L per-block tokens (BT, 1+N, D), consumed one at a time.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        backbone_width: int,
        num_layers: int,
        patch_size: int,
        grid_size: int,
        dim: int = 320,
        num_heads: int | None = None,
        mlp_ratio: float = 4.0,
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
    ) -> None:
        super().__init__()
        num_heads = num_heads or max(1, dim // 64)
        td_set = set(range(num_layers)) if td_layers is None else set(td_layers)
        if bad := sorted(i for i in td_set if not 0 <= i < num_layers):
            raise ValueError(f"td_layers {bad} outside the {num_layers} layers (0-based)")
        self.num_layers = num_layers
        self.grid_size = grid_size
        self.dim = dim
        self.layer_mix = layer_mix
        self.td_layers = tuple(sorted(td_set))
        self.grad_checkpointing = False

        self.stem = SMEStem(
            dim,
            patch_size=patch_size,
            grid_size=grid_size,
            num_local_frames=num_local_frames,
            use_motion=sme,
            motion_weight=motion_weight,
            centre_weight=centre_weight,
        )
        self.proj = nn.ModuleList(
            FrozenFeatureProjection(backbone_width, dim) for _ in range(num_layers)
        )
        self.pos_embed = nn.Parameter(torch.zeros(grid_size * grid_size, dim))  # (N, d)
        nn.init.normal_(self.pos_embed, std=0.01)
        rates = torch.linspace(0, drop_path_rate, num_layers).tolist()
        self.blocks = nn.ModuleList(
            TDSBlock(
                dim,
                num_heads=num_heads,
                mlp_ratio=mlp_ratio,
                temporal_kernel=temporal_kernel,
                use_td=i in td_set,
                td_kind=td_kind,
                td_kernel=td_kernel,
                td_reduction=td_reduction,
                drop_path=rates[i],
            )
            for i in range(num_layers)
        )
        self.head = ClassifierHead(dim, num_classes, head_dropout)

    def no_weight_decay(self) -> set[str]:
        """Parameters of this module that AdamW must not decay."""
        return {"pos_embed"}

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each TDS block in backward instead of keeping its activations (the
        recomputation leaves the BatchNorm running statistics alone)."""
        self.grad_checkpointing = enable

    def compile_blocks(self, **options) -> None:
        """``torch.compile`` every TDS block (``options`` go to ``nn.Module.compile``).

        Each block compiles to one graph, forward and backward, without breaks; blocks of one
        shape share it. The elementwise ops (norms, GELU, gates, casts, residual adds) fuse,
        and most of the per-op dispatch goes away.
        """
        for block in self.blocks:
            block.compile(**options)

    def forward_features(self, video: Tensor, layers: Iterable[Tensor]) -> Tensor:
        """(B, T, M, 3, H, W), L x (BT, 1+N, D) -> pooled features (B, d)."""
        num_frames = video.shape[1]
        x = self.stem(video)  # (BT, N, d)
        count = 0
        for proj, block, feats in zip(self.proj, self.blocks, layers, strict=False):
            p = proj(feats)  # (BT, 1+N, d)
            # layer_mix * x + (1 - layer_mix) * patches, in one pass: (BT, N, d)
            x = torch.lerp(p[:, 1:], x, self.layer_mix)
            cls = p[:, :1]  # (BT, 1, d)
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(
                    block,
                    x,
                    cls,
                    self.pos_embed,
                    num_frames,
                    use_reentrant=False,
                    context_fn=functools.partial(recompute_contexts, block),
                )
            else:
                x = block(x, cls, self.pos_embed, num_frames)
            count += 1
        if count != self.num_layers:
            raise ValueError(
                f"side network got {count} backbone layers, built for {self.num_layers}"
            )
        return self.head.pool(x, num_frames)

    def forward_head(self, pooled: Tensor) -> Tensor:
        return self.head(pooled)

    def forward(self, video: Tensor, layers: Iterable[Tensor]) -> Tensor:
        return self.forward_head(self.forward_features(video, layers))
