"""The TDS block: temporal convolution (+ TD-Adapter), patch-query attention and MLP.

Tokens-last: the reference's 1x1x1 / (3,1,1) convolutions are Linears over channels and a
temporal depthwise convolution on (B, T, N, d), and its BatchNorm3d a TokenBatchNorm.

Shape legend:
    B clips, T frames, M local frames per segment, H = W image size, P patch size,
    g grid size, N = g * g patch tokens, D backbone width, d side width, c = d // r TD width,
    BT = B * T.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import DropPath
from torch import Tensor, nn

from tdsclip.models.layers import TemporalDepthwiseConv, TokenBatchNorm
from tdsclip.models.ops import (
    batch_norm_linear,
    gelu_linear,
    layer_norm_in_dtype,
    patch_query_attention,
)
from tdsclip.models.td_adapter import TDAdapter, TDKind

# The reference initialises residual output projections with std d^-0.5 * (2 * 12)^-0.5 for
# every side depth (12 = ViT-B depth); kept so fresh models match the reference recipe.
_INIT_DEPTH = 12


class TemporalConv(nn.Module):
    """Pointwise -> depthwise temporal -> pointwise convolution, (B, T, N, d) -> same."""

    def __init__(self, dim: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.pw1 = nn.Linear(dim, dim)
        self.dw = TemporalDepthwiseConv(dim, kernel_size)
        self.pw2 = nn.Linear(dim, dim)

    def forward(self, x: Tensor, norm: nn.Module | None = None) -> Tensor:
        """``norm`` (the block's BatchNorm), if given, is applied to x first, fused with pw1."""
        h = self.pw1(x) if norm is None else batch_norm_linear(x, norm, self.pw1)
        return self.pw2(self.dw(h))


class Mlp(nn.Module):
    """Linear -> GELU -> Linear, (..., d) -> (..., d); the GELU output is recomputed in backward."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor, norm: nn.Module | None = None) -> Tensor:
        """``norm`` (the block's BatchNorm), if given, is applied to x first, fused with fc1."""
        h = self.fc1(x) if norm is None else batch_norm_linear(x, norm, self.fc1)
        return gelu_linear(h, self.fc2.weight, self.fc2.bias)


class PatchQueryAttention(nn.Module):
    """Multi-head attention in which only the N patch tokens query; keys/values are all 1+N.

    (BT, 1+N, d) -> (BT, N, d); weights laid out like nn.MultiheadAttention (qkv stacked).
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"side width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, s: Tensor) -> Tensor:
        qkv = self.qkv(s)  # (BT, 1+N, 3d)
        out = patch_query_attention(qkv, self.num_heads)  # (BT, N, d)
        return self.proj(out)


def shift_class_token(cls: Tensor, num_frames: int) -> Tensor:
    """Token shift: the first half of the channels takes the next frame's value, the second
    half the previous frame's, zeros where there is none. (BT, 1, d) -> (BT, 1, d)."""
    dim = cls.shape[-1]
    fold = dim // 2
    c = cls.view(-1, num_frames, dim)  # (B, T, d)
    from_next = F.pad(c[:, 1:, :fold], (0, 0, 0, 1))  # (B, T, fold)
    from_prev = F.pad(c[:, :-1, fold:], (0, 0, 1, 0))  # (B, T, d - fold)
    return torch.cat([from_next, from_prev], dim=-1).view(cls.shape)


class TDSBlock(nn.Module):
    """One side-network block: temporal conv (+ TD-Adapter), attention, MLP.

    x (BT, N, d), cls (BT, 1, d) from the frozen block, pos (N, d) -> (BT, N, d).
    With ``use_td=False`` it is the plain temporal 3D-conv block (Side4Video-style baseline).
    """

    def __init__(
        self,
        dim: int,
        *,
        num_heads: int,
        mlp_ratio: float = 4.0,
        temporal_kernel: int = 3,
        use_td: bool = True,
        td_kind: TDKind = "maxpool",
        td_kernel: int = 3,
        td_reduction: int = 16,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.conv_norm = TokenBatchNorm(dim)
        self.temporal = TemporalConv(dim, temporal_kernel)
        self.td = (
            TDAdapter(dim, reduction=td_reduction, kind=td_kind, kernel_size=td_kernel)
            if use_td
            else None
        )
        self.attn_norm = nn.LayerNorm(dim)
        self.attn = PatchQueryAttention(dim, num_heads)
        self.mlp_norm = TokenBatchNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self._init_weights(dim)

    def _init_weights(self, dim: int) -> None:
        attn_std = dim**-0.5
        proj_std = dim**-0.5 * (2 * _INIT_DEPTH) ** -0.5
        nn.init.normal_(self.attn.qkv.weight, std=attn_std)
        nn.init.zeros_(self.attn.qkv.bias)
        nn.init.normal_(self.attn.proj.weight, std=proj_std)
        nn.init.zeros_(self.attn.proj.bias)
        nn.init.normal_(self.mlp.fc1.weight, std=(2 * dim) ** -0.5)
        nn.init.normal_(self.mlp.fc2.weight, std=proj_std)

    def forward(self, x: Tensor, cls: Tensor, pos: Tensor, num_frames: int) -> Tensor:
        bt, n, d = x.shape
        clip = x.view(bt // num_frames, num_frames, n, d)  # (B, T, N, d)
        y = self.temporal(clip, norm=self.conv_norm)  # (B, T, N, d)
        if self.td is not None:
            y = self.td(y)
        clip = clip + self.drop_path(y)
        x = clip.view(bt, n, d)

        # pos in x's dtype: an fp32 sum would make the LayerNorm and its saved input fp32.
        s = torch.cat([shift_class_token(cls, num_frames), x + pos.to(x.dtype)], dim=1)
        norm = self.attn_norm
        s = layer_norm_in_dtype(s, norm.weight, norm.bias, norm.eps)  # (BT, 1+N, d)
        x = x + self._drop_clip(self.attn(s), num_frames)
        x = x + self._drop_clip(self.mlp(x, norm=self.mlp_norm), num_frames)
        return x

    def _drop_clip(self, y: Tensor, num_frames: int) -> Tensor:
        """Drop path per clip (not per frame) on a (BT, N, d) residual branch."""
        if isinstance(self.drop_path, nn.Identity):
            return y
        return self.drop_path(y.view(-1, num_frames, *y.shape[1:])).view(y.shape)
