"""Training augmentation of a whole batch as tensor ops, on the training device.

With `data.augment_on=device`, data workers decode and resize a clip once and draw the random
choices of its S augmented copies (`VideoTrainTransform.sample`, the generator of the item, the
same draws as the worker path); `encode_params` packs them as small tensors. The training loop
moves the batch to its device and calls `DeviceAugment`, which makes the S copies of every clip
there: random-sized crop, flip, RandAugment (`tdsclip.data.clip_ops`), grayscale. Everything is
a function of the frames and the drawn parameters, so the views do not depend on the number of
workers or ranks, and resuming needs no extra state.

Legend: B videos, S copies per video (`num_sample`), V = B*S views, T segments, M local frames,
N = T*M frames, L RandAugment op slots (the policy's `n`), H' x W' resized frames, H = W the
input size.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

from tdsclip.data import clip_ops
from tdsclip.data.rand_augment import GEOMETRIC, SKIPPED, RandAugmentPolicy
from tdsclip.data.transforms import RAND_AUGMENT_FILL, ClipParams


def encode_params(params: list[ClipParams], policy: RandAugmentPolicy | None) -> dict[str, Any]:
    """The S copies' choices as tensors: box int64 (S, 4), flip and grayscale bool (S,),
    RandAugment kernel int64 (S, L) (SKIPPED where an op did not run) and argument float64
    (S, L); L = 0 without RandAugment."""
    slots = policy.num_layers if policy is not None else 0
    kernels = torch.full((len(params), slots), SKIPPED, dtype=torch.int64)
    args = torch.zeros((len(params), slots), dtype=torch.float64)
    for i, p in enumerate(params):
        if policy is None or p.rand_augment_seed is None:
            continue
        for j, draw in enumerate(policy.sample(p.rand_augment_seed)):
            kernels[i, j], args[i, j] = draw.kernel, draw.arg
    return {
        "box": torch.tensor([p.box for p in params], dtype=torch.int64).view(-1, 4),
        "flip": torch.tensor([p.flip for p in params], dtype=torch.bool),
        "grayscale": torch.tensor([p.grayscale for p in params], dtype=torch.bool),
        "kernel": kernels,
        "arg": args,
    }


class DeviceAugment:
    """Makes the augmented views of a batch on the device its frames are sent to."""

    def __init__(self, *, input_size: int, fill: int = RAND_AUGMENT_FILL) -> None:
        self.input_size = input_size
        self.fill = fill

    def __call__(
        self, frames: list[torch.Tensor], params: dict[str, torch.Tensor], device: torch.device
    ) -> torch.Tensor:
        """frames: B resized clips, uint8 (T, M, 3, H', W') each (any H', W'); params: the
        collated `encode_params` (leading dims (B, S)) -> views uint8 (B, S, T, M, 3, H, W)."""
        b, s = params["flip"].shape
        t, m = frames[0].shape[:2]
        # Views are copy-minor (v = b*S + s): per-view parameters flatten (B, S) -> (V,).
        x = self.crop(frames, params["box"], device)  # (V, N, 3, H, W)
        x = self.flip(x, params["flip"].view(-1))
        kernels, args = params["kernel"].flatten(0, 1), params["arg"].flatten(0, 1)  # (V, L)
        x = self.rand_augment(x, kernels, args)
        x = self.grayscale(x, params["grayscale"].view(-1))
        return x.view(b, s, t, m, *x.shape[-3:])  # (B, S, T, M, 3, H, W)

    def crop(self, frames: list[torch.Tensor], boxes: torch.Tensor, device: torch.device):
        """Random-sized crops, bilinear with antialiasing as the worker path: (V, N, 3, H, W).

        One call per view, each covering all N frames: the crop windows differ in size, and
        torchvision's antialiased kernel takes one window per call."""
        size = [self.input_size, self.input_size]
        b, s = boxes.shape[:2]
        n, c = frames[0].shape[0] * frames[0].shape[1], frames[0].shape[2]
        out = torch.empty(b * s, n, c, *size, dtype=torch.uint8, device=device)
        for i, (clip, clip_boxes) in enumerate(zip(frames, boxes.tolist(), strict=True)):
            clip = clip.to(device, non_blocking=True).flatten(0, 1)  # (N, 3, H', W')
            for j, box in enumerate(clip_boxes):
                out[i * s + j] = F.resized_crop(
                    clip, *box, size, interpolation=InterpolationMode.BILINEAR, antialias=True
                )
        return out

    @staticmethod
    def flip(x: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
        return _apply(x, flip.nonzero()[:, 0], torch.flip, dims=[-1])

    @staticmethod
    def grayscale(x: torch.Tensor, grayscale: torch.Tensor) -> torch.Tensor:
        return _apply(x, grayscale.nonzero()[:, 0], F.rgb_to_grayscale, num_output_channels=3)

    def rand_augment(self, x: torch.Tensor, kernels: torch.Tensor, args: torch.Tensor):
        """Op slot by op slot, every clip its own op; the clips of one op run together.

        kernels, args: (V, L) on the CPU (they pick which clips each op touches, so keeping
        them on the host avoids device round trips). The geometric ops of a slot share one
        sparse resampling call."""
        height, width = x.shape[-2:]
        for slot in range(kernels.shape[1]):
            kernel, arg = kernels[:, slot], args[:, slot]
            for op in sorted(set(kernel.tolist()) - {SKIPPED, *GEOMETRIC}):
                clips = (kernel == op).nonzero()[:, 0]
                x = _apply(x, clips, clip_ops.COLOUR_OPS[op], arg[clips])
            geometric = torch.isin(kernel, torch.tensor(GEOMETRIC)).nonzero()[:, 0]
            if len(geometric):
                matrices = clip_ops.affine_matrices(
                    kernel[geometric].tolist(), arg[geometric].tolist(), height=height, width=width
                )
                x = _apply(x, geometric, clip_ops.affine, matrices, fill=self.fill)
        return x


def _apply(
    x: torch.Tensor, clips: torch.Tensor, fn: Callable[..., torch.Tensor], *per_clip: Any, **kw: Any
) -> torch.Tensor:
    """Overwrite the clips of x (CPU int64 indices along dim 0) with `fn(those clips, *their
    rows of per_clip, **kw)`. x is the batch's own buffer (made by `crop`).

    On the CPU one clip at a time: every temporary is then one clip's size (tens of MB, under
    glibc's mmap threshold), so freed memory is reused instead of page-faulted back on every
    op, and slices are copied instead of index_copy_'d (several times faster there). On an
    accelerator the clips go together, one kernel launch per step of the op."""
    if len(clips) == 0:
        return x
    if x.device.type == "cpu":
        for k, i in enumerate(clips.tolist()):
            x[i : i + 1] = fn(x[i : i + 1], *(a[k : k + 1] for a in per_clip), **kw)
        return x
    index = clips.to(x.device)
    return x.index_copy_(0, index, fn(x.index_select(0, index), *per_clip, **kw))
