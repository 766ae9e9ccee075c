"""Clip transforms: one random draw per clip, label swaps by name, eval crops, normalisation."""

import random

import numpy as np
import pytest
import torch
from data_fixtures import random_clip, train_transform

from tdsclip.data.transforms import (
    CLIP_MEAN,
    CLIP_STD,
    ClipRandAugment,
    VideoEvalTransform,
    flip_label_map,
    normalize_video,
    resize_frames,
    sample_resized_crop,
)

SSV2_LR = [
    "Approaching something with your camera",
    "Pulling something from left to right",
    "Pulling something from right to left",
    "Pushing something from left to right",
    "Pushing something from right to left",
    "Turning the camera left while filming something",
    "Turning the camera right while filming something",
    "Moving something and something so they pass each other",
]


def test_normalize_video_matches_clip_statistics():
    x = torch.randint(0, 256, (2, 3, 4, 5, 3, 6, 7), dtype=torch.uint8)
    out = normalize_video(x)
    assert out.dtype == torch.float32 and out.shape == x.shape
    mean = torch.tensor(CLIP_MEAN).view(3, 1, 1)
    std = torch.tensor(CLIP_STD).view(3, 1, 1)
    torch.testing.assert_close(out, (x.float() / 255 - mean) / std)
    torch.testing.assert_close(normalize_video(x.float()), out)  # float in [0, 255] too
    with pytest.raises(ValueError, match="3 channels"):
        normalize_video(torch.zeros(2, 4, 5, 5))


def test_flip_pairs_found_by_name_in_any_class_order():
    pairs = flip_label_map(SSV2_LR)
    assert pairs == {1: 2, 2: 1, 3: 4, 4: 3, 5: 6, 6: 5}
    shuffled = [SSV2_LR[i] for i in (6, 0, 4, 2, 7, 5, 1, 3)]  # SSv1-like other order
    names = {i: shuffled[j] for i, j in flip_label_map(shuffled).items()}
    assert names == {
        i: n.replace("left", "@").replace("right", "left").replace("@", "right")
        for i, n in enumerate(shuffled)
        if "left" in n or "right" in n
    }
    assert flip_label_map(["Moving something left", "Something else"]) == {}  # no partner


def test_flip_swaps_labels_exactly_when_frames_are_mirrored():
    # crop = whole frame, so the output is the resized input or its mirror image
    t = train_transform(
        resize=(32, 32),
        crop_scale=(1.0, 1.0),
        crop_ratio=(1.0, 1.0),
        flip_pairs=flip_label_map(SSV2_LR),
        rand_augment=None,
    )
    clip = t.resize(random_clip(3))
    outcomes = set()
    for seed in range(20):
        out, label = t(clip, 3, np.random.default_rng(seed))
        mirrored = torch.equal(out, clip.flip(-1))
        assert mirrored or torch.equal(out, clip)
        assert label == (4 if mirrored else 3)
        outcomes.add(mirrored)
    assert outcomes == {True, False}
    plain = train_transform(
        resize=(32, 32),
        crop_scale=(1.0, 1.0),
        crop_ratio=(1.0, 1.0),
        flip="plain",
        flip_pairs=flip_label_map(SSV2_LR),
        rand_augment=None,
    )
    assert {plain(clip, 3, np.random.default_rng(s))[1] for s in range(20)} == {3}


@pytest.mark.parametrize("grayscale_p", [0.0, 1.0])
def test_every_frame_of_a_clip_gets_the_same_augmentation(grayscale_p):
    """Identical frames in -> identical frames out, through crop, flip, RandAugment, grayscale."""
    frame = random_clip(1, seed=3)
    clip = frame.expand(40, -1, -1, -1).contiguous()  # T*M = 8*5 copies
    t = train_transform(grayscale_p=grayscale_p)
    resized = t.resize(clip)
    outputs = []
    for seed in range(5):
        out, _ = t(resized, 0, np.random.default_rng(seed))
        assert out.shape == (40, 3, 32, 32) and out.dtype == torch.uint8
        assert all(torch.equal(out[0], f) for f in out)
        outputs.append(out[0])
        if grayscale_p == 1.0:
            assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])
    assert len({o.numpy().tobytes() for o in outputs}) == 5  # draws differ between seeds


def test_rand_augment_replays_one_draw_and_restores_global_rng():
    ra = ClipRandAugment("rand-m7-n4-mstd0.5-inc1", image_size=32)
    clip = random_clip(1, 32, 32).expand(6, -1, -1, -1).contiguous()
    random.seed(123)
    np.random.seed(123)
    before = (random.getstate(), np.random.get_state()[1].copy())
    changed = 0
    for seed in range(8):
        out = ra(clip, seed)
        assert all(torch.equal(out[0], f) for f in out)
        changed += not torch.equal(out, clip)
    assert changed >= 6  # n=4 ops at p=0.5 almost always change something
    assert random.getstate() == before[0]
    np.testing.assert_array_equal(np.random.get_state()[1], before[1])
    with pytest.raises(ValueError, match="RandAugment policy"):
        ClipRandAugment("augmix-m5", image_size=32)


def test_train_transform_is_a_function_of_the_generator():
    t = train_transform(grayscale_p=0.5)
    clip = t.resize(random_clip(8))
    a = t(clip, 1, np.random.default_rng(42))
    b = t(clip, 1, np.random.default_rng(42))
    assert torch.equal(a[0], b[0]) and a[1] == b[1]


def test_resized_crop_box_within_frame_and_scale():
    rng = np.random.default_rng(0)
    for _ in range(200):
        top, left, h, w = sample_resized_crop(256, 320, (0.08, 1.0), (0.75, 4 / 3), rng)
        assert 0 <= top <= 256 - h and 0 <= left <= 320 - w
        assert 0.07 * 256 * 320 <= h * w <= 256 * 320
    # impossible ratio -> centred fallback with the ratio clamped
    assert sample_resized_crop(10, 100, (0.9, 1.0), (1.0, 1.0), rng) == (0, 45, 10, 10)


def ramp(height: int, width: int) -> torch.Tensor:
    """(1, 3, H, W) with x in channel 0 and y in channel 1, to locate crops."""
    x = torch.arange(width).expand(height, width)
    y = torch.arange(height)[:, None].expand(height, width)
    return torch.stack([x, y, torch.zeros_like(x)]).to(torch.uint8)[None]


def test_three_crops_along_the_longer_side():
    t = VideoEvalTransform(input_size=32, resize=(40, 80), num_crops=3)
    crops = t(ramp(40, 80))  # already the target size: resize is the identity
    assert crops.shape == (3, 1, 3, 32, 32)
    assert [int(c[0, 0, 0, 0]) for c in crops] == [0, 24, 48]  # left, centre, right x
    assert {int(c[0, 1, 0, 0]) for c in crops} == {4}  # vertically centred
    portrait = VideoEvalTransform(input_size=32, resize=(80, 40), num_crops=3)
    crops = portrait(ramp(80, 40))
    assert [int(c[0, 1, 0, 0]) for c in crops] == [0, 24, 48]  # top, centre, bottom y
    assert {int(c[0, 0, 0, 0]) for c in crops} == {4}
    centre = VideoEvalTransform(input_size=32, resize=(40, 80), num_crops=1)(ramp(40, 80))
    assert centre.shape == (1, 1, 3, 32, 32) and int(centre[0, 0, 0, 0, 0]) == 24


def test_short_side_resize_keeps_portrait_aspect():
    t = VideoEvalTransform(input_size=32, resize=40, num_crops=1)
    assert resize_frames(random_clip(2, 100, 50), 40).shape == (2, 3, 80, 40)
    assert t(random_clip(2, 100, 50)).shape == (1, 2, 3, 32, 32)
