"""Shared building blocks of the side network: tokens-last BatchNorms, their SyncBatchNorm
conversion, BatchNorm statistics under activation checkpointing, and the temporal depthwise
convolution.

Everything runs on a tokens-last layout (B, T, N, C): BatchNorm over (B, T, g, g) equals
BatchNorm1d over the flattened tokens, and the temporal depthwise convolution is a sum of
frames shifted along T.

Shape legend:
    B clips, T frames, M local frames per segment, H = W image size, P patch size,
    g grid size, N = g * g patch tokens, D backbone width, d side width, c = d // r TD width,
    BT = B * T.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from tdsclip.models.ops import temporal_depthwise_conv


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


def recompute_contexts(module: nn.Module) -> tuple[contextlib.AbstractContextManager, ...]:
    """checkpoint's ``context_fn``: the forward as it is, the recomputation without a second
    BatchNorm statistics update."""
    return contextlib.nullcontext(), batch_norm_stats_kept(module)


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
