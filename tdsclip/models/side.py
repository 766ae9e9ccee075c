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
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Iterable, Iterator, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from timm.layers import DropPath
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.checkpoint import checkpoint

from tdsclip.models.ops import (
    batch_norm_linear,
    compute_dtype,
    conv3d_taps,
    frozen_norm_linear,
    gelu_linear,
    layer_norm_in_dtype,
    patch_query_attention,
    sigmoid_gate,
    temporal_depthwise_conv,
)


@contextlib.contextmanager
def batch_norm_stats_kept(module: nn.Module) -> Iterator[None]:
    """On exit, put the running statistics of ``module``'s BatchNorms back as they were.

    Activation checkpointing runs a block's forward again in backward. In training mode each
    BatchNorm would then update its running mean, variance and batch count a second time for
    the same batch, and evaluation would see other statistics than without checkpointing.
    Under this context the recomputation normalises with the same batch statistics and
    leaves the running ones as the forward left them.
    """
    norms = [
        m
        for m in module.modules()
        if isinstance(m, _BatchNorm) and m.training and m.track_running_stats
    ]
    saved = [
        [b.clone() for b in (m.running_mean, m.running_var, m.num_batches_tracked)] for m in norms
    ]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, (mean, var, count) in zip(norms, saved, strict=True):
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                m.num_batches_tracked.copy_(count)


def _recompute_contexts(module: nn.Module) -> tuple[contextlib.AbstractContextManager, ...]:
    """checkpoint's ``context_fn``: the forward as it is, the recomputation without a second
    BatchNorm statistics update."""
    return contextlib.nullcontext(), batch_norm_stats_kept(module)


TDKind = Literal["maxpool", "conv", "direct"]
TD_KINDS: tuple[str, ...] = ("maxpool", "conv", "direct")

# The reference initialises residual output projections with std d^-0.5 * (2 * 12)^-0.5 for
# every side depth (12 = ViT-B depth); kept so fresh models match the reference recipe.
_INIT_DEPTH = 12


class TokenBatchNorm(nn.BatchNorm1d):
    """BatchNorm over every token: (..., C) -> (..., C).

    Statistics per channel over all leading dims, i.e. exactly BatchNorm3d over (B, C, T, g, g)
    or BatchNorm2d over (BT, C, g, g), without moving channels to dim 1.
    """

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.reshape(-1, x.shape[-1])).view(x.shape)


class TokenSyncBatchNorm(nn.SyncBatchNorm):
    """SyncBatchNorm with TokenBatchNorm's tokens-last input layout."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.reshape(-1, x.shape[-1])).view(x.shape)


def convert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm in ``module`` by a SyncBatchNorm with the same state.

    torch's converter would turn a TokenBatchNorm into a plain SyncBatchNorm that reads
    (B, T, N, C) input as channels-first; tokens-last norms get TokenSyncBatchNorm instead.
    """
    for name, child in module.named_children():
        if isinstance(child, TokenBatchNorm):
            sync = TokenSyncBatchNorm(
                child.num_features,
                child.eps,
                child.momentum,
                child.affine,
                child.track_running_stats,
            )
            sync.load_state_dict(child.state_dict())
            sync.train(child.training)
            setattr(module, name, sync.to(child.weight.device))
        elif isinstance(child, _BatchNorm):
            setattr(module, name, nn.SyncBatchNorm.convert_sync_batchnorm(child))
        else:
            convert_sync_batchnorm(child)
    return module


class TemporalDepthwiseConv(nn.Module):
    """Depthwise convolution over time, kernel (k, 1, 1), zero padding k // 2: (B,T,N,C)."""

    def __init__(self, channels: int, kernel_size: int = 3, bias: bool = True) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"temporal kernel size must be odd, got {kernel_size}")
        self.kernel_size = kernel_size
        self.weight = nn.Parameter(torch.empty(channels, kernel_size))
        self.bias = nn.Parameter(torch.empty(channels)) if bias else None
        # Same default as nn.Conv3d(channels, channels, (k,1,1), groups=channels).
        bound = 1.0 / math.sqrt(kernel_size)
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        return temporal_depthwise_conv(x, self.weight, self.bias)  # (B, T, N, C), x's dtype


def temporal_max_pool(x: Tensor, kernel_size: int) -> Tensor:
    """MaxPool3d((k,1,1), stride 1, padding k//2) over time on (B, T, N, C).

    One max_pool1d over time on a (B, N*C, T) view: two kernels forward and backward instead
    of a padded stack of shifted copies, and MaxPool3d's own choice among tied maxima.
    """
    b, t, n, c = x.shape
    over_time = x.reshape(b, t, n * c).transpose(1, 2)  # (B, N*C, T) view
    pooled = F.max_pool1d(over_time, kernel_size, stride=1, padding=kernel_size // 2)
    return pooled.transpose(1, 2).reshape(x.shape)  # (B, T, N, C)


class TemporalDifference(nn.Module):
    """The temporal-difference operator of the TD-Adapter, on (B, T, N, c).

    ``maxpool``: x - MaxPool_t(x) (the paper's choice); ``conv``: x - DepthwiseConv_t(x)
    (temporal-conv enhancement, kernel initialised to an average); ``direct``: x[t+1] - x[t]
    with zero at the last frame.
    """

    def __init__(self, channels: int, *, kind: TDKind = "maxpool", kernel_size: int = 3) -> None:
        super().__init__()
        if kind not in TD_KINDS:
            raise ValueError(f"td kind must be one of {TD_KINDS}, got {kind!r}")
        if kernel_size % 2 != 1 or kernel_size < 1:
            raise ValueError(f"td kernel size must be odd and positive, got {kernel_size}")
        self.kind = kind
        self.kernel_size = kernel_size
        self.conv = None
        if kind == "conv":
            self.conv = TemporalDepthwiseConv(channels, kernel_size, bias=False)
            nn.init.constant_(self.conv.weight, 1.0 / kernel_size)

    def forward(self, x: Tensor) -> Tensor:
        if self.kind == "maxpool":
            return x - temporal_max_pool(x, self.kernel_size)
        if self.kind == "conv":
            return x - self.conv(x)
        return F.pad(x[:, 1:] - x[:, :-1], (0, 0, 0, 0, 0, 1))  # (B, T, N, c)


class TDAdapter(nn.Module):
    """Temporal Difference Adapter: gates features by their channel-reduced time difference.

    z -> b = BN(reduce(z)); u = 0.5 diff(b) + 0.5 mean_c(diff(b)); y = BN(expand(u));
    out = z + z * (sigmoid(y) - 0.5). Input and output (B, T, N, d).
    """

    def __init__(
        self,
        dim: int,
        *,
        reduction: int = 16,
        kind: TDKind = "maxpool",
        kernel_size: int = 3,
    ) -> None:
        super().__init__()
        hidden = dim // reduction
        if hidden < 1:
            raise ValueError(f"td reduction {reduction} leaves no channel of {dim}")
        self.reduce = nn.Linear(dim, hidden, bias=False)
        self.reduce_norm = TokenBatchNorm(hidden)
        self.diff = TemporalDifference(hidden, kind=kind, kernel_size=kernel_size)
        self.expand = nn.Linear(hidden, dim, bias=False)
        self.expand_norm = TokenBatchNorm(dim)

    def forward(self, z: Tensor) -> Tensor:
        b = self.reduce_norm(self.reduce(z))  # (B, T, N, c)
        diff = self.diff(b)  # (B, T, N, c)
        # expand(0.5 diff + 0.5 mean_c(diff)) = diff W'^T with W' = 0.5 (W + mean_c W): the
        # channel mix is linear, so it moves onto the (d, c) weight, off the activations.
        w = self.expand.weight  # (d, c)
        y = self.expand_norm(F.linear(diff, 0.5 * (w + w.mean(dim=1, keepdim=True))))
        return sigmoid_gate(z, y)  # z + z * (sigmoid(y) - 0.5), (B, T, N, d)


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


class PatchConv3d(nn.Conv3d):
    """Conv3d with kernel (3, P, P), stride (1, P, P), padding (1, 1, 1), computed as a matmul.

    The spatial stride equals the kernel, so the convolution is one matmul over
    non-overlapping P x P patches (of the frames shifted by the one-pixel padding) whose
    output stacks the 3 temporal taps, then a sum of the taps shifted along time. The result
    is the same convolution (weights and state dict are nn.Conv3d's) at matmul speed, and it
    comes out tokens-last. (B, T, C, H, W) -> (B, T, N, d).
    """

    def __init__(self, in_channels: int, out_channels: int, *, patch_size: int, grid_size: int):
        super().__init__(
            in_channels,
            out_channels,
            kernel_size=(3, patch_size, patch_size),
            stride=(1, patch_size, patch_size),
            padding=(1, 1, 1),
        )
        self.patch_size = patch_size
        self.grid_size = grid_size

    def forward(self, frames: Tensor) -> Tensor:
        b, t, _, h, w = frames.shape
        p, g = self.patch_size, self.grid_size
        if (h + 2 - p) // p + 1 != g or (w + 2 - p) // p + 1 != g:
            raise ValueError(f"{h}x{w} frames do not give a {g}x{g} grid of {p}-pixel patches")
        padded = F.pad(frames, (1, 1, 1, 1))[..., : g * p, : g * p]  # (B, T, C, gP, gP)
        patches = rearrange(
            padded, "b t c (gh ph) (gw pw) -> (b t gh gw) (c ph pw)", ph=p, pw=p
        )  # (BT*N, C*P*P)
        taps = conv3d_taps(self.weight, patches.dtype)  # (3d, C*P*P)
        y = F.linear(patches, taps).view(b, t, g * g, 3, -1)  # (B, T, N, 3, d)
        out = y[:, :, :, 1] + self.bias.to(y.dtype)  # (B, T, N, d): the centre tap
        out[:, 1:] += y[:, :-1, :, 0]  # frame t sees t-1 through the first tap
        out[:, :-1] += y[:, 1:, :, 2]  # ... and t+1 through the last one
        return out


class SMEStem(nn.Module):
    """Side Motion Enhancement Adapter: the side stream's input tokens.

    centre = BN(Conv3d(V)) on the centre frames, motion = BN(Conv3d(D)) on the M - 1 local
    frame differences; out = centre_weight * centre + motion_weight * motion (centre only when
    ``use_motion`` is off: "SME off"; the frames besides the centre are then unused). The Conv3d
    has kernel (3, P, P), stride (1, P, P) and padding (1, 1, 1) as in the reference weights.
    (B, T, M, 3, H, W) -> (BT, N, d).
    """

    def __init__(
        self,
        dim: int,
        *,
        patch_size: int,
        grid_size: int,
        num_local_frames: int = 5,
        use_motion: bool = True,
        motion_weight: float = 0.5,
        centre_weight: float = 1.0,
    ) -> None:
        super().__init__()
        if num_local_frames < 1 or num_local_frames % 2 != 1:
            raise ValueError(f"num_local_frames must be odd and >= 1, got {num_local_frames}")
        if use_motion and num_local_frames < 3:
            raise ValueError(
                "the SME motion path needs at least 3 local frames per segment; "
                "use num_local_frames 3 or 5, or switch SME off"
            )
        self.num_local_frames = num_local_frames
        self.motion_weight = motion_weight
        self.centre_weight = centre_weight
        conv = dict(patch_size=patch_size, grid_size=grid_size)
        self.centre_conv = PatchConv3d(3, dim, **conv)
        self.centre_norm = TokenBatchNorm(dim)
        if use_motion:
            self.motion_conv = PatchConv3d(3 * (num_local_frames - 1), dim, **conv)
            self.motion_norm = TokenBatchNorm(dim)
        else:
            self.motion_conv = self.motion_norm = None

    def forward(self, video: Tensor) -> Tensor:
        m = self.num_local_frames
        if video.shape[2] != m:
            raise ValueError(f"expected {m} local frames per segment, got {video.shape[2]}")
        # The frames never need a gradient: bring them to the compute dtype once.
        frames = video.to(compute_dtype(video))  # (B, T, M, 3, H, W)
        x = self.centre_norm(self.centre_conv(frames[:, :, m // 2]))  # (B, T, N, d)
        if self.centre_weight != 1.0:
            x = self.centre_weight * x
        if self.motion_conv is not None:
            diffs = (frames[:, :, 1:] - frames[:, :, :-1]).flatten(2, 3)  # (B, T, 3(M-1), H, W)
            x = x + self.motion_weight * self.motion_norm(self.motion_conv(diffs))
        return x.flatten(0, 1)  # (BT, N, d)


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
                    context_fn=functools.partial(_recompute_contexts, block),
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
