"""RandAugment on the device is timm's recipe: the same draws, the same pixels (per-op parity)."""

from __future__ import annotations

import math
import random
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image
from timm.data.auto_augment import AugmentOp, rand_augment_transform

from tdsclip.data import clip_ops
from tdsclip.data.rand_augment import (
    OPS,
    RAND_INCREASING_OPS,
    RAND_OPS,
    SKIPPED,
    Kernel,
    parse_policy,
)

POLICY = "rand-m7-n4-mstd0.5-inc1"  # the Something-Something recipe
HPARAMS = {"translate_const": 100, "img_mean": (128, 128, 128), "interpolation": Image.BICUBIC}

# Tolerance per op, |device - timm| in uint8 levels over every pixel: (mean, max). All exact:
# colour ops follow Pillow's integer and float32 arithmetic; geometric ops sum the bicubic taps
# in float32 and recompute, in Pillow's double arithmetic, the pixels whose sum lies within
# 1e-3 of an integer (where truncation could differ; without that step 1 level on up to 6% of
# the pixels differed, at magnitudes whose fractions make exact integers common).
EXACT = (0.0, 0)
TOLERANCE = {k: EXACT for k in Kernel}


def real_looking_frames(num: int = 3, height: int = 56, width: int = 72) -> torch.Tensor:
    """uint8 (N, 3, H, W): smooth colour texture + sensor noise, moving between frames, with a
    flat band (few grey levels) and clipped highlights, like decoded video."""
    rng = np.random.default_rng(0)
    coarse = torch.from_numpy(rng.uniform(0, 255, (1, 3, height // 8 + 2, width // 8 + 3)))
    smooth = torch.nn.functional.interpolate(coarse, scale_factor=8, mode="bicubic")[0]
    frames = []
    for t in range(num):
        frame = smooth[:, :height, 2 * t : 2 * t + width] * 1.2 - 20
        frame = frame + torch.from_numpy(rng.normal(0, 4, frame.shape))
        frame[:, height // 2 : height // 2 + 6] = 90.0 + t  # flat band
        frames.append(frame.clamp(0, 255).round().to(torch.uint8))
    return torch.stack(frames)


def timm_reference(name: str, magnitude: float, frames: torch.Tensor, sign_seed: int):
    """timm's op at a fixed magnitude on every frame (its sign drawn from random.seed)."""
    op = AugmentOp(name, prob=1.0, magnitude=magnitude, hparams=HPARAMS)
    random.seed(sign_seed)
    args = op.level_fn(magnitude, op.hparams) if op.level_fn is not None else ()
    images = [Image.fromarray(f.permute(1, 2, 0).numpy()) for f in frames]
    out = np.stack([np.asarray(op.aug_fn(im, *args, **op.kwargs)) for im in images])
    return torch.from_numpy(out).permute(0, 3, 1, 2), (args[0] if args else 0.0)


def device_op(kernel: Kernel, arg: float, frames: torch.Tensor) -> torch.Tensor:
    clip = frames[None]  # one clip (1, N, 3, H, W)
    if kernel in clip_ops.COLOUR_OPS:
        return clip_ops.COLOUR_OPS[kernel](clip, torch.tensor([arg], dtype=torch.float64))[0]
    height, width = frames.shape[-2:]
    matrices = clip_ops.affine_matrices([kernel], [arg], height=height, width=width)
    return clip_ops.affine(clip, matrices, fill=128)[0]


MAGNITUDES = (0.0, 3.0, 5.5, 7.0, 9.5, 10.0)


def pillow_rejects(name: str, magnitude: float) -> bool:
    """Posterize keeping 0 bits (Posterize below magnitude 2.5, PosterizeIncreasing at 10):
    Pillow >= 11 raises there, so timm does too; the device op returns black (Pillow < 11)."""
    bits = int(magnitude / 10 * 4)
    return (name == "Posterize" and bits == 0) or (name == "PosterizeIncreasing" and bits == 4)


@pytest.mark.parametrize("name", sorted(set(RAND_OPS) | set(RAND_INCREASING_OPS)))
def test_every_op_matches_timm_pil_within_its_tolerance(name):
    frames = real_looking_frames()
    kernel = OPS[name][0]
    mean_tol, max_tol = TOLERANCE[kernel]
    for magnitude in MAGNITUDES:
        if pillow_rejects(name, magnitude):
            continue
        for sign_seed in (0, 3):  # random.seed(0) keeps the sign, random.seed(3) negates
            reference, arg = timm_reference(name, magnitude, frames, sign_seed)
            diff = (device_op(kernel, arg, frames).int() - reference.int()).abs()
            where = f"{name} magnitude {magnitude} arg {arg}"
            assert diff.float().mean().item() <= mean_tol, where
            assert diff.max().item() <= max_tol, where


def test_zero_bit_posterize_is_black():
    frames = real_looking_frames(num=1)
    assert (device_op(Kernel.POSTERIZE, 0.0, frames) == 0).all()


def test_geometric_ops_fill_and_edges_like_pillow():
    """Large moves: the filled area and the repeated edge match Pillow exactly."""
    frames = real_looking_frames(num=1)
    for name, arg in (("TranslateXRel", 0.45), ("TranslateYRel", -0.45), ("Rotate", 30.0)):
        op = AugmentOp(name, prob=1.0, magnitude=10, hparams=HPARAMS)
        image = Image.fromarray(frames[0].permute(1, 2, 0).numpy())
        reference = torch.from_numpy(np.array(op.aug_fn(image, arg, **op.kwargs)))
        out = device_op(OPS[name][0], arg, frames)[0].permute(1, 2, 0)
        filled = (reference == 128).all(-1)
        assert filled.float().mean() > 0.1  # the move left a sizeable empty area
        assert torch.equal(out, reference), name


def test_integer_translation_and_zero_rotation_copy_pixels():
    frames = real_looking_frames(num=2)
    width = frames.shape[-1]
    moved = device_op(Kernel.TRANSLATE_X, 3 / width, frames)  # exactly 3 pixels
    assert torch.equal(moved[..., :-3], frames[..., 3:])
    assert (moved[..., -3:] == 128).all()
    assert torch.equal(device_op(Kernel.ROTATE, 0.0, frames), frames)


def test_policy_parsing_follows_timm():
    p = parse_policy(POLICY)
    assert (p.magnitude, p.num_layers, p.prob, p.magnitude_std) == (7.0, 4, 0.5, 0.5)
    assert p.ops == RAND_INCREASING_OPS and p.magnitude_max is None
    assert parse_policy("rand-m9-n2").ops == RAND_OPS
    assert parse_policy("rand-m5-mstd101").magnitude_std == math.inf  # > 100: uniform
    assert parse_policy("rand-mmax20-p0.8").magnitude_max == 20.0
    for bad, message in (
        ("augmix-m5", "expected 'rand-"),
        ("rand-m7-q3", "unknown section 'q3'"),
        ("rand-m7-tweights", "transform sets"),
    ):
        with pytest.raises(ValueError, match=message):
            parse_policy(bad)


def recording_timm(policy: str):
    """timm's RandAugment whose ops record (name, magnitude, argument) instead of drawing."""
    transform = rand_augment_transform(policy, dict(HPARAMS))
    calls = []
    for op in transform.ops:
        level_fn = op.level_fn

        def level(magnitude, hparams, _level=level_fn, _name=op.name):
            args = _level(magnitude, hparams) if _level is not None else ()
            calls.append((_name, magnitude, args[0] if args else 0.0))
            return args

        op.level_fn = level  # ops without a level function get a recorder too
        op.aug_fn = lambda image, *args, **kwargs: image
    return transform, calls


@pytest.mark.parametrize(
    "policy", [POLICY, "rand-m9-n3-mstd0.5", "rand-m5-n2-p0.8-mstd101", "rand-m12-mmax15-n2-inc1"]
)
def test_draws_equal_timm_for_the_same_seed(policy):
    transform, calls = recording_timm(policy)
    sampler = parse_policy(policy)
    image = Image.new("RGB", (4, 4))
    for seed in range(300):
        calls.clear()
        random.seed(seed)
        np.random.seed(seed)
        transform(image)
        mine = [(d.name, d.magnitude, d.arg) for d in sampler.sample(seed) if d.kernel != SKIPPED]
        assert mine == calls, seed


# Ops whose argument gets a random sign, and their argument at magnitude 0 (no change).
SIGNED = {
    **dict.fromkeys(["Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel"], 0.0),
    **dict.fromkeys(
        ["ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing", "SharpnessIncreasing"],
        1.0,
    ),
}


def draw_statistics(draws: list[tuple[str, float, float]]) -> dict[str, object]:
    signs = [arg < SIGNED[name] for name, _, arg in draws if name in SIGNED]
    bins = np.histogram([m for _, m, _ in draws], bins=np.arange(5.0, 9.01, 0.25))[0]
    return {
        "ops": Counter(name for name, _, _ in draws),
        "histogram": bins / len(draws),
        "negative": float(np.mean(signs)),
        "applied": len(draws),
    }


def test_op_frequencies_magnitudes_and_signs_match_timm_sampling():
    """Independent streams (different seeds): the distributions agree within sampling error."""
    draws = 6000
    transform, calls = recording_timm(POLICY)
    image = Image.new("RGB", (4, 4))
    timm_draws = []
    for seed in range(draws, 2 * draws):
        calls.clear()
        random.seed(seed)
        np.random.seed(seed)
        transform(image)
        timm_draws += calls
    sampler = parse_policy(POLICY)
    ours = [
        (d.name, d.magnitude, d.arg)
        for seed in range(draws)
        for d in sampler.sample(seed)
        if d.kernel != SKIPPED
    ]
    a, b = draw_statistics(ours), draw_statistics(timm_draws)
    slots = 4 * draws
    assert abs(a["applied"] - b["applied"]) < 5 * math.sqrt(slots * 0.25) * math.sqrt(2)
    assert abs(a["applied"] / slots - 0.5) < 0.01  # p = 0.5 per op slot
    assert set(a["ops"]) == set(b["ops"]) == set(RAND_INCREASING_OPS)
    for name in RAND_INCREASING_OPS:  # uniform choice of the 15 ops
        pa, pb = a["ops"][name] / a["applied"], b["ops"][name] / b["applied"]
        sigma = math.sqrt(pa * (1 - pa) / a["applied"] + pb * (1 - pb) / b["applied"])
        assert abs(pa - pb) < 5 * sigma and abs(pa - 1 / 15) < 0.01, name
    # Magnitude ~ N(7, 0.5) clipped to [0, 10]: the same histogram, both centred at 7.
    assert np.abs(a["histogram"] - b["histogram"]).max() < 0.01
    assert abs(np.mean([m for _, m, _ in ours]) - 7.0) < 0.02
    # Signed ops negate with probability 1/2.
    assert abs(a["negative"] - b["negative"]) < 0.03 and abs(a["negative"] - 0.5) < 0.03
