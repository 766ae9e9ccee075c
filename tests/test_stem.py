"""The stem's matmul formulation is exactly the reference's Conv3d."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tdsclip.models.sme_adapter import PatchConv3d


@pytest.mark.parametrize(("size", "patch"), [(48, 16), (224, 16), (224, 14), (30, 16), (40, 8)])
def test_patch_conv_equals_conv3d(size, patch):
    grid = (size + 2 - patch) // patch + 1
    conv = PatchConv3d(6, 8, patch_size=patch, grid_size=grid)
    frames = torch.randn(2, 3, 6, size, size)  # (B, T, C, H, W)
    ours = conv(frames)  # (B, T, N, d)
    ref = F.conv3d(
        frames.transpose(1, 2), conv.weight, conv.bias, stride=(1, patch, patch), padding=(1, 1, 1)
    )  # (B, d, T, g, g)
    assert ref.shape[-1] == grid
    torch.testing.assert_close(ours, ref.flatten(3).permute(0, 2, 3, 1), atol=1e-4, rtol=1e-4)
    ours.square().sum().backward()
    grad = conv.weight.grad.clone()
    conv.weight.grad = None
    ref.square().sum().backward()
    torch.testing.assert_close(grad, conv.weight.grad, atol=1e-3, rtol=1e-4)


def test_patch_conv_rejects_a_wrong_grid():
    conv = PatchConv3d(3, 4, patch_size=16, grid_size=14)
    with pytest.raises(ValueError, match="14x14 grid"):
        conv(torch.randn(1, 2, 3, 192, 192))
