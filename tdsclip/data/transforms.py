"""Clip transforms: the same spatial and colour change for every frame of a clip.

Clips stay uint8 (N, 3, H, W) tensors end to end (N = frames of the clip, T*M or C*T*M) so that
workers ship small batches; `normalize_video` turns them into CLIP-normalised float32 on
whatever device the training loop moved them to.

All randomness comes from an explicit `numpy.random.Generator`. timm's RandAugment draws from
the global `random` / `np.random`; `ClipRandAugment` seeds them from the generator, replays the
same state for every frame, and restores the caller's global state afterwards.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from PIL import Image
from timm.data.auto_augment import rand_augment_transform
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

FlipMode = Literal["none", "plain", "swap_lr"]
FLIP_MODES: tuple[FlipMode, ...] = ("none", "plain", "swap_lr")
ResizeSpec = int | tuple[int, int]


def normalize_video(x: torch.Tensor) -> torch.Tensor:
    """uint8 or float pixels in [0, 255], channels at dim -3 -> float32 CLIP-normalised.

    Works for any leading dims, e.g. (B, S, T, M, 3, H, W), on x's device.
    """
    if x.ndim < 3 or x.shape[-3] != 3:
        raise ValueError(f"expected 3 channels at dim -3, got shape {tuple(x.shape)}")
    mean = torch.tensor(CLIP_MEAN, dtype=torch.float32, device=x.device).view(3, 1, 1) * 255.0
    std = torch.tensor(CLIP_STD, dtype=torch.float32, device=x.device).view(3, 1, 1) * 255.0
    return (x.to(torch.float32) - mean) / std


def resize_frames(frames: torch.Tensor, size: ResizeSpec) -> torch.Tensor:
    """Bicubic resize of (N, 3, H, W): an int sets the short side, (h, w) the exact size."""
    target = [size] if isinstance(size, int) else list(size)
    return F.resize(frames, target, interpolation=InterpolationMode.BICUBIC, antialias=True)


def sample_resized_crop(
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    rng: np.random.Generator,
) -> tuple[int, int, int, int]:
    """Inception-style random-sized crop box (top, left, h, w).

    Area fraction uniform in `scale`, aspect ratio log-uniform in `ratio`; after 10 misses the
    largest centred box within the ratio range (torchvision's algorithm, explicit generator).
    """
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
        w = round(math.sqrt(target_area * aspect))
        h = round(math.sqrt(target_area / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        h, w = height, round(height * ratio[1])
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


_LEFT_RIGHT = re.compile(r"\b(left|right)\b", re.IGNORECASE)


def _swap_left_right(name: str) -> str:
    def swap(match: re.Match[str]) -> str:
        word = match.group(0)
        other = "right" if word.lower() == "left" else "left"
        return other.capitalize() if word[0].isupper() else other

    return _LEFT_RIGHT.sub(swap, name)


def flip_label_map(classes: list[str]) -> dict[int, int]:
    """Label pairs that trade places under a horizontal flip, found by class name.

    Two classes pair when swapping the words left <-> right in one gives the other (SSv2:
    "Pushing something from left to right" <-> "... from right to left"). Works for any class
    order, e.g. SSv1's.
    """
    index_of = {name: i for i, name in enumerate(classes)}
    pairs = {}
    for i, name in enumerate(classes):
        mirrored = _swap_left_right(name)
        if mirrored != name and mirrored in index_of:
            pairs[i] = index_of[mirrored]
    return pairs


RAND_AUGMENT_FILL = 128  # timm's img_mean: the empty area of RandAugment's geometric ops


class ClipRandAugment:
    """timm RandAugment (e.g. `rand-m7-n4-mstd0.5-inc1`) with one draw per clip.

    timm picks ops and magnitudes from the global `random` and `np.random`; every frame is
    augmented from the same seeded global state, so all frames get identical ops, magnitudes
    and signs. The caller's global RNG state is restored afterwards.
    """

    def __init__(self, policy: str, *, image_size: int) -> None:
        hparams = {
            "translate_const": int(image_size * 0.45),
            "img_mean": (RAND_AUGMENT_FILL,) * 3,
            "interpolation": Image.BICUBIC,
        }
        try:
            self._augment = rand_augment_transform(policy, hparams)
        except AssertionError:
            raise ValueError(
                f"invalid RandAugment policy {policy!r}; expected timm's format, "
                "e.g. 'rand-m7-n4-mstd0.5-inc1'"
            ) from None
        self.policy = policy

    def __call__(self, frames: torch.Tensor, seed: int) -> torch.Tensor:
        """frames: uint8 (N, 3, H, W); seed: in [0, 2**32) -> uint8 (N, 3, H, W)."""
        images = frames.permute(0, 2, 3, 1).numpy()  # (N, H, W, 3)
        py_state, np_state = random.getstate(), np.random.get_state()
        try:
            out = []
            for image in images:
                random.seed(seed)
                np.random.seed(seed)
                out.append(np.asarray(self._augment(Image.fromarray(image))))  # (H, W, 3)
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)
        return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous()  # (N, 3, H, W)


@dataclass(frozen=True)
class ClipParams:
    """The random choices of one augmented copy of a clip, shared by all its frames."""

    box: tuple[int, int, int, int]  # crop (top, left, height, width) in the resized frames
    flip: bool
    rand_augment_seed: int | None  # seeds RandAugment's draws; None without RandAugment
    grayscale: bool


class VideoTrainTransform:
    """Training augmentation of a clip, one random draw shared by all its frames.

    resize (bicubic) -> random-sized crop to `input_size` (bilinear, as the reference) ->
    horizontal flip p=0.5 (`swap_lr` also swaps left/right labels) -> RandAugment (optional) ->
    random grayscale. Call `resize` once per loaded clip and `__call__` once per repeat;
    `sample` draws a repeat's choices without applying them (`data.augment_on=device` applies
    them to the batch on the training device, `tdsclip.data.device_augment`).
    """

    def __init__(
        self,
        *,
        input_size: int,
        resize: ResizeSpec,
        crop_scale: tuple[float, float],
        crop_ratio: tuple[float, float],
        flip: FlipMode,
        flip_pairs: dict[int, int],
        rand_augment: str | None,
        grayscale_p: float,
    ) -> None:
        if flip not in FLIP_MODES:
            raise ValueError(f"unknown flip mode {flip!r}; choose one of {FLIP_MODES}")
        if not 0.0 <= grayscale_p <= 1.0:
            raise ValueError(f"grayscale_p must be in [0, 1], got {grayscale_p}")
        if not (0 < crop_scale[0] <= crop_scale[1] <= 1.0):
            raise ValueError(f"crop_scale must satisfy 0 < min <= max <= 1, got {crop_scale}")
        if not (0 < crop_ratio[0] <= crop_ratio[1]):
            raise ValueError(f"crop_ratio must satisfy 0 < min <= max, got {crop_ratio}")
        self.input_size = input_size
        self.resize_to = resize
        self.crop_scale = crop_scale
        self.crop_ratio = crop_ratio
        self.flip = flip
        self.flip_pairs = flip_pairs if flip == "swap_lr" else {}
        self.rand_augment = (
            ClipRandAugment(rand_augment, image_size=input_size) if rand_augment else None
        )
        self.grayscale_p = grayscale_p

    def resize(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 3, H, W) -> (N, 3, H', W'): the deterministic part, shared by repeats."""
        return resize_frames(frames, self.resize_to)

    def sample(self, height: int, width: int, rng: np.random.Generator) -> ClipParams:
        """One repeat's choices for resized frames of height x width.

        The draws come in the order the transform has always made them (crop, flip,
        RandAugment seed, grayscale), so a generator gives the same choices on either path.
        """
        box = sample_resized_crop(height, width, self.crop_scale, self.crop_ratio, rng)
        flip = self.flip != "none" and bool(rng.random() < 0.5)
        seed = int(rng.integers(2**32)) if self.rand_augment is not None else None
        grayscale = self.grayscale_p > 0 and bool(rng.random() < self.grayscale_p)
        return ClipParams(box=box, flip=flip, rand_augment_seed=seed, grayscale=grayscale)

    def label(self, label: int, params: ClipParams) -> int:
        """The label of the augmented copy: swapped when a `swap_lr` flip mirrored it."""
        return self.flip_pairs.get(label, label) if params.flip else label

    def apply(self, frames: torch.Tensor, params: ClipParams) -> torch.Tensor:
        """Resized uint8 (N, 3, H', W') -> (N, 3, S, S) with the choices `params`."""
        size = [self.input_size, self.input_size]
        clip = F.resized_crop(
            frames, *params.box, size, interpolation=InterpolationMode.BILINEAR, antialias=True
        )  # (N, 3, S, S)
        if params.flip:
            clip = F.horizontal_flip(clip)
        if self.rand_augment is not None and params.rand_augment_seed is not None:
            clip = self.rand_augment(clip, seed=params.rand_augment_seed)
        if params.grayscale:
            clip = F.rgb_to_grayscale(clip, num_output_channels=3)
        return clip

    def __call__(
        self, frames: torch.Tensor, label: int, rng: np.random.Generator
    ) -> tuple[torch.Tensor, int]:
        """Resized uint8 (N, 3, H', W') -> ((N, 3, S, S), label after a possible flip)."""
        params = self.sample(*frames.shape[-2:], rng)
        return self.apply(frames, params), self.label(label, params)


class VideoEvalTransform:
    """Deterministic evaluation views: resize, then 1 centre crop or 3 crops of `input_size`.

    The 3 crops sit at the start, centre and end of the longer side (left/centre/right for
    landscape frames, top/centre/bottom for portrait ones), centred on the shorter side.
    """

    def __init__(self, *, input_size: int, resize: ResizeSpec, num_crops: int) -> None:
        if num_crops not in (1, 3):
            raise ValueError(f"num_crops must be 1 or 3, got {num_crops}")
        self.input_size = input_size
        self.resize_to = resize
        self.num_crops = num_crops

    def crop_boxes(self, height: int, width: int) -> list[tuple[int, int]]:
        """(top, left) of every crop for a resized frame of height x width."""
        size = self.input_size
        if height < size or width < size:
            raise ValueError(f"resized frames {height}x{width} are smaller than the crop {size}")
        centre = ((height - size) // 2, (width - size) // 2)
        if self.num_crops == 1:
            return [centre]
        if width >= height:
            return [(centre[0], 0), centre, (centre[0], width - size)]
        return [(0, centre[1]), centre, (height - size, centre[1])]

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 3, H, W) -> (K, N, 3, S, S), K = num_crops."""
        frames = resize_frames(frames, self.resize_to)
        size = self.input_size
        return torch.stack(
            [
                frames[..., top : top + size, left : left + size]
                for top, left in self.crop_boxes(*frames.shape[-2:])
            ]
        )
