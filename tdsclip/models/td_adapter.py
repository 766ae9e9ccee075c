"""The TD-Adapter (Temporal Difference Adapter) and its temporal-difference operator.

Tokens-last like the rest of the side network: the reference's 1x1x1 convolutions are Linears
over channels, its BatchNorm3d a TokenBatchNorm over the tokens, and its temporal max-pool a
max_pool1d over T.

Shape legend:
    B clips, T frames, M local frames per segment, H = W image size, P patch size,
    g grid size, N = g * g patch tokens, D backbone width, d side width, c = d // r TD width,
    BT = B * T.
"""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

from tdsclip.models.layers import TemporalDepthwiseConv, TokenBatchNorm
from tdsclip.models.ops import sigmoid_gate

TDKind = Literal["maxpool", "conv", "direct"]
TD_KINDS: tuple[str, ...] = ("maxpool", "conv", "direct")


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
