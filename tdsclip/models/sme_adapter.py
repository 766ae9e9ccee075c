"""The SME-Adapter (Side Motion Enhancement Adapter) stem: the side stream's input tokens from
the centre frames and the local frame differences.

The reference's Conv3d (kernel (3, P, P), stride (1, P, P)) is computed as one matmul over
patches and comes out tokens-last, (B, T, N, d), without permutes.

Shape legend:
    B clips, T frames, M local frames per segment, H = W image size, P patch size,
    g grid size, N = g * g patch tokens, D backbone width, d side width, c = d // r TD width,
    BT = B * T.
"""

from __future__ import annotations

import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from tdsclip.models.layers import TokenBatchNorm
from tdsclip.models.ops import compute_dtype, conv3d_taps


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
