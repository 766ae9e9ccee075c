"""data.augment_on=device: the same views as the worker path, from the same random numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from data_fixtures import (
    data_config,
    files_config,
    motion_config,
    random_clip,
    train_transform,
    write_k400,
    write_ssv2,
)
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

from tdsclip.data import DataConfig, build_dataset, build_loader
from tdsclip.data.device_augment import DeviceAugment, encode_params
from tdsclip.data.loader import collate_train
from tdsclip.data.rand_augment import parse_policy
from tdsclip.data.transforms import (
    ClipParams,
    ClipRandAugment,
    VideoTrainTransform,
    flip_label_map,
    sample_resized_crop,
)

SS_RECIPE = dict(flip="swap_lr", rand_augment="rand-m7-n4-mstd0.5-inc1")
CPU = torch.device("cpu")


def ssv2_config(files, **overrides):
    return files_config("ssv2", files, num_classes=5, **{**SS_RECIPE, **overrides})


def device_views(dataset, keys):
    """Items of `keys` from a device-mode dataset, collated and augmented on the CPU."""
    batch = collate_train([dataset[k] for k in keys])
    return dataset.device_augment(batch["frames"], batch["params"], CPU), batch["label"]


def test_device_views_equal_worker_views_bit_for_bit(tmp_path):
    """SSv2 recipe (crop, swap flip, RandAugment) plus grayscale: identical views and labels."""
    files = write_ssv2(tmp_path)
    worker = build_dataset(ssv2_config(files, grayscale_p=0.5), "train")
    device = build_dataset(ssv2_config(files, grayscale_p=0.5, augment_on="device"), "train")
    assert worker.device_augment is None and device.device_augment is not None
    keys = [(i, epoch) for epoch in range(3) for i in range(len(worker))]
    views, labels = device_views(device, keys)
    assert views.shape == (len(keys), 2, 4, 3, 3, 32, 32) and views.dtype == torch.uint8
    for k, key in enumerate(keys):
        item = worker[key]
        assert torch.equal(views[k], item["video"]), key
        assert torch.equal(labels[k], item["label"]), key


def test_kinetics_clips_of_different_sizes_batch_together(tmp_path):
    """Short-side resize keeps the aspect ratio: the device batch is a list of clip sizes."""
    files = write_k400(tmp_path)
    cfg = files_config("k400", files, num_classes=3, resize=40, grayscale_p=0.5)
    worker = build_dataset(cfg, "train")
    device = build_dataset({**cfg, "augment_on": "device"}, "train")
    keys = [(0, 0), (1, 0), (0, 1), (1, 1)]  # the landscape and the portrait clip
    batch = collate_train([device[k] for k in keys])
    assert {tuple(f.shape[-2:]) for f in batch["frames"]} == {(40, 60), (60, 40)}
    views = device.device_augment(batch["frames"], batch["params"], CPU)
    for k, key in enumerate(keys):
        assert torch.equal(views[k], worker[key]["video"]), key


def legacy_transform(t: VideoTrainTransform, frames, label, rng):
    """The training transform as it was before the device path: draw and apply interleaved."""
    top, left, h, w = sample_resized_crop(*frames.shape[-2:], t.crop_scale, t.crop_ratio, rng)
    size = [t.input_size, t.input_size]
    clip = F.resized_crop(
        frames, top, left, h, w, size, interpolation=InterpolationMode.BILINEAR, antialias=True
    )
    flipped = t.flip != "none" and rng.random() < 0.5
    if flipped:
        clip = F.horizontal_flip(clip)
        label = t.flip_pairs.get(label, label)
    if t.rand_augment is not None:
        clip = t.rand_augment(clip, seed=int(rng.integers(2**32)))
    if t.grayscale_p > 0 and rng.random() < t.grayscale_p:
        clip = F.rgb_to_grayscale(clip, num_output_channels=3)
    return clip, label, (top, left, h, w), flipped


def test_crop_boxes_flips_and_label_swaps_match_the_legacy_transform():
    classes = ["Pushing something from left to right", "Pushing something from right to left"]
    t = train_transform(
        input_size=24, resize=(32, 40), flip_pairs=flip_label_map(classes), grayscale_p=0.3
    )
    frames = random_clip(3, 32, 40)
    flips = 0
    draws = 400
    for seed in range(draws):
        params = t.sample(32, 40, np.random.default_rng(seed))
        legacy, label, box, flipped = legacy_transform(t, frames, 0, np.random.default_rng(seed))
        assert params.box == box and params.flip == flipped, seed
        assert t.label(0, params) == label == (1 if flipped else 0)
        if seed < 40:  # the pixels too (RandAugment through timm: slower)
            clip, new_label = t(frames, 0, np.random.default_rng(seed))
            assert torch.equal(clip, legacy) and new_label == label
        flips += flipped
    assert abs(flips / draws - 0.5) < 4 * math.sqrt(0.25 / draws)  # flip rate 1/2


def test_every_frame_of_a_view_gets_the_same_change():
    frame = random_clip(1, 40, 48)[None]  # (1, 1, 3, 40, 48)
    frames = [frame.expand(4, 3, -1, -1, -1).contiguous()]  # T=4 x M=3 identical frames
    t = train_transform(
        resize=(40, 48),
        crop_scale=(0.3, 1.0),
        flip="plain",
        rand_augment="rand-m9-n4-mstd0.5-p1.0",
        grayscale_p=0.5,
    )
    policy = parse_policy("rand-m9-n4-mstd0.5-p1.0")
    for seed in range(6):
        rng = np.random.default_rng(seed)
        params = encode_params([t.sample(40, 48, rng) for _ in range(3)], policy)
        batch = {k: v[None] for k, v in params.items()}
        views = DeviceAugment(input_size=32)(frames, batch, CPU)  # (1, 3, 4, 3, 3, 32, 32)
        flat = views.flatten(2, 3)  # (1, S, T*M, 3, H, W)
        assert (flat == flat[:, :, :1]).all()
        assert not torch.equal(flat[0, 0], flat[0, 1])  # copies differ


def device_motion_config(root, **overrides):
    return motion_config(root, augment_on="device", **{**SS_RECIPE, **overrides})


def test_device_views_independent_of_num_workers(small_motion_root):
    train = build_dataset(device_motion_config(small_motion_root), "train")
    runs = {}
    for workers in (0, 2):
        loader = build_loader(
            train, split="train", batch_size=3, num_workers=workers, seed=5, pin_memory=False
        )
        runs[workers] = []
        for epoch in (0, 1):
            loader.sampler.set_epoch(epoch)
            for batch in loader:
                views = train.device_augment(batch["frames"], batch["params"], CPU)
                runs[workers].append((views, batch["label"], batch["index"]))
    assert len(runs[0]) == 8  # 12 videos / 3, two epochs
    for (va, la, ia), (vb, lb, ib) in zip(runs[0], runs[2], strict=True):
        assert torch.equal(ia, ib) and torch.equal(la, lb) and torch.equal(va, vb)
    assert not torch.equal(runs[0][0][0], runs[0][4][0])  # another epoch, other views


def test_augment_on_is_validated_with_a_clear_message():
    with pytest.raises(ValueError, match=r"augment_on must be one of \('device', 'worker'\)"):
        DataConfig.from_mapping(data_config(augment_on="gpu"))
    with pytest.raises(ValueError, match=r"rand_augment: .*transform sets"):
        DataConfig.from_mapping(data_config(augment_on="device", rand_augment="rand-m9-tweights"))
    # timm's weighted op lists still work where timm runs them
    DataConfig.from_mapping(data_config(augment_on="worker", rand_augment="rand-m9-tweights"))


def test_eval_views_do_not_depend_on_augment_on(tmp_path):
    files = write_ssv2(tmp_path)
    for split in ("val", "test"):
        a = build_dataset(ssv2_config(files), split)
        b = build_dataset(ssv2_config(files, augment_on="device"), split)
        for i in range(len(a)):
            assert torch.equal(a[i]["video"], b[i]["video"])


def test_a_flat_clip_is_augmented_like_timm():
    """A single-colour clip (AutoContrast and Equalize keep it) through the whole recipe."""
    t = ClipRandAugment(SS_RECIPE["rand_augment"], image_size=32)
    flat = torch.full((2, 3, 32, 32), 77, dtype=torch.uint8)
    policy = parse_policy(SS_RECIPE["rand_augment"])
    for seed in range(30):
        params = encode_params([ClipParams((0, 0, 32, 32), False, seed, False)], policy)
        views = DeviceAugment(input_size=32)(
            [flat.view(2, 1, 3, 32, 32)], {k: v[None] for k, v in params.items()}, CPU
        )
        assert torch.equal(views[0, 0].flatten(0, 1), t(flat, seed)), seed
