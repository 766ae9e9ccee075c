"""RandAugment policies in timm's string format, and their random draws, without images.

`parse_policy("rand-m7-n4-mstd0.5-inc1")` reads a policy the way timm's
`rand_augment_transform` does; `RandAugmentPolicy.sample(seed)` draws what timm's
`RandAugment` would draw after `random.seed(seed); np.random.seed(seed)`: which `n` ops, whether
each one runs (probability `p`), its magnitude (Gaussian around `m` with std `mstd`, uniform
when `mstd` > 100, clipped to [0, `mmax` or 10]) and its sign, turned into the op's argument
(degrees, shear factor, enhancement factor, bits, threshold, ...) as timm's level functions do.
The draws use private `random.Random` / `numpy.random.RandomState` instances seeded like timm's
global ones, so they give the same numbers without touching global state.

The batched pixel ops that apply these arguments live in `tdsclip.data.clip_ops`; an op is one
of the `Kernel` values (the increasing and the plain variants of an op share a kernel and differ
only in how the magnitude becomes an argument).
"""

from __future__ import annotations

import enum
import math
import random
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

LEVEL_DENOM = 10.0  # timm's magnitude scale: magnitude 10 is the strongest level
TRANSLATE_PCT = 0.45  # timm's default translate_pct for TranslateXRel / TranslateYRel


class Kernel(enum.IntEnum):
    """The pixel operation an op runs (the index the batched ops dispatch on)."""

    AUTO_CONTRAST = 0
    EQUALIZE = 1
    INVERT = 2
    ROTATE = 3
    POSTERIZE = 4
    SOLARIZE = 5
    SOLARIZE_ADD = 6
    COLOR = 7
    CONTRAST = 8
    BRIGHTNESS = 9
    SHARPNESS = 10
    SHEAR_X = 11
    SHEAR_Y = 12
    TRANSLATE_X = 13
    TRANSLATE_Y = 14


GEOMETRIC = (Kernel.ROTATE, Kernel.SHEAR_X, Kernel.SHEAR_Y, Kernel.TRANSLATE_X, Kernel.TRANSLATE_Y)
SKIPPED = -1  # op slot that did not run (its probability draw failed)


def _negate(value: float, rng: random.Random) -> float:
    return -value if rng.random() > 0.5 else value  # timm's _randomly_negate


def _rotate(m: float, rng: random.Random) -> float:
    return _negate(m / LEVEL_DENOM * 30.0, rng)


def _enhance(m: float, rng: random.Random) -> float:
    return m / LEVEL_DENOM * 1.8 + 0.1


def _enhance_increasing(m: float, rng: random.Random) -> float:
    return max(0.1, 1.0 + _negate(m / LEVEL_DENOM * 0.9, rng))


def _shear(m: float, rng: random.Random) -> float:
    return _negate(m / LEVEL_DENOM * 0.3, rng)


def _translate_rel(m: float, rng: random.Random) -> float:
    return _negate(m / LEVEL_DENOM * TRANSLATE_PCT, rng)


def _posterize(m: float, rng: random.Random) -> float:
    return float(int(m / LEVEL_DENOM * 4))


def _posterize_increasing(m: float, rng: random.Random) -> float:
    return 4.0 - int(m / LEVEL_DENOM * 4)


def _solarize(m: float, rng: random.Random) -> float:
    return float(min(256, int(m / LEVEL_DENOM * 256)))


def _solarize_increasing(m: float, rng: random.Random) -> float:
    return 256.0 - min(256, int(m / LEVEL_DENOM * 256))


def _solarize_add(m: float, rng: random.Random) -> float:
    return float(min(128, int(m / LEVEL_DENOM * 110)))


LevelFn = Callable[[float, random.Random], float]

# timm op name -> (kernel, magnitude -> argument; None: the op takes no argument).
OPS: dict[str, tuple[Kernel, LevelFn | None]] = {
    "AutoContrast": (Kernel.AUTO_CONTRAST, None),
    "Equalize": (Kernel.EQUALIZE, None),
    "Invert": (Kernel.INVERT, None),
    "Rotate": (Kernel.ROTATE, _rotate),
    "Posterize": (Kernel.POSTERIZE, _posterize),
    "PosterizeIncreasing": (Kernel.POSTERIZE, _posterize_increasing),
    "Solarize": (Kernel.SOLARIZE, _solarize),
    "SolarizeIncreasing": (Kernel.SOLARIZE, _solarize_increasing),
    "SolarizeAdd": (Kernel.SOLARIZE_ADD, _solarize_add),
    "Color": (Kernel.COLOR, _enhance),
    "ColorIncreasing": (Kernel.COLOR, _enhance_increasing),
    "Contrast": (Kernel.CONTRAST, _enhance),
    "ContrastIncreasing": (Kernel.CONTRAST, _enhance_increasing),
    "Brightness": (Kernel.BRIGHTNESS, _enhance),
    "BrightnessIncreasing": (Kernel.BRIGHTNESS, _enhance_increasing),
    "Sharpness": (Kernel.SHARPNESS, _enhance),
    "SharpnessIncreasing": (Kernel.SHARPNESS, _enhance_increasing),
    "ShearX": (Kernel.SHEAR_X, _shear),
    "ShearY": (Kernel.SHEAR_Y, _shear),
    "TranslateXRel": (Kernel.TRANSLATE_X, _translate_rel),
    "TranslateYRel": (Kernel.TRANSLATE_Y, _translate_rel),
}

# timm's `rand` op lists (its _RAND_TRANSFORMS and _RAND_INCREASING_TRANSFORMS), in timm's order:
# the order matters, the op draw picks list positions.
RAND_OPS = (
    "AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "SolarizeAdd",
    "Color", "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateXRel",
    "TranslateYRel",
)  # fmt: skip
RAND_INCREASING_OPS = (
    "AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing", "SolarizeIncreasing",
    "SolarizeAdd", "ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing",
    "SharpnessIncreasing", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel",
)  # fmt: skip


@dataclass(frozen=True)
class OpDraw:
    """One op slot of one clip: the kernel to run (or SKIPPED), its argument and magnitude."""

    kernel: int
    arg: float
    magnitude: float
    name: str


@dataclass(frozen=True)
class RandAugmentPolicy:
    """A parsed `rand-...` policy; `sample` draws one clip's ops."""

    ops: tuple[str, ...]
    magnitude: float
    num_layers: int
    prob: float
    magnitude_std: float
    magnitude_max: float | None

    def sample(self, seed: int) -> list[OpDraw]:
        """The `num_layers` op slots timm draws from global RNGs seeded with `seed`."""
        py_rng = random.Random(seed)
        np_rng = np.random.RandomState(seed)
        chosen = np_rng.choice(len(self.ops), self.num_layers, replace=True)
        return [self._draw(self.ops[int(i)], py_rng) for i in chosen]

    def _draw(self, name: str, rng: random.Random) -> OpDraw:
        # Same draw order as timm's AugmentOp.__call__: probability, magnitude, sign.
        if self.prob < 1.0 and rng.random() > self.prob:
            return OpDraw(SKIPPED, 0.0, 0.0, name)
        magnitude = self.magnitude
        if self.magnitude_std == math.inf:
            magnitude = rng.uniform(0, magnitude)
        elif self.magnitude_std > 0:
            magnitude = rng.gauss(magnitude, self.magnitude_std)
        magnitude = max(0.0, min(magnitude, self.magnitude_max or LEVEL_DENOM))
        kernel, level = OPS[name]
        arg = level(magnitude, rng) if level is not None else 0.0
        return OpDraw(int(kernel), float(arg), magnitude, name)


def parse_policy(policy: str) -> RandAugmentPolicy:
    """timm's `rand-m{M}-n{N}-p{P}-mstd{S}-mmax{X}-inc{0|1}` string (sections in any order).

    Raises ValueError for strings timm rejects, and for a `t...` transform set (weighted or
    3-Augment op lists), which the batched ops do not implement.
    """
    sections = policy.split("-")
    if sections[0] != "rand":
        raise ValueError(f"invalid RandAugment policy {policy!r}; expected 'rand-...'")
    magnitude, num_layers, prob = LEVEL_DENOM, 2, 0.5
    magnitude_std, magnitude_max, increasing = 0.0, None, False
    for section in sections[1:]:
        if section.startswith("t"):
            raise ValueError(
                f"RandAugment policy {policy!r}: transform sets ('{section}') are not supported "
                "by the batched ops; use data.augment_on=worker for them"
            )
        parts = re.split(r"(\d.*)", section)
        if len(parts) < 2:
            continue  # timm ignores sections without a number
        key, value = parts[:2]
        try:
            if key == "mstd":
                magnitude_std = float(value)
                magnitude_std = math.inf if magnitude_std > 100 else magnitude_std
            elif key == "mmax":
                magnitude_max = float(int(value))
            elif key == "inc":
                increasing = bool(int(value))
            elif key == "m":
                magnitude = float(int(value))
            elif key == "n":
                num_layers = int(value)
            elif key == "p":
                prob = float(value)
            else:
                raise ValueError(f"unknown section {section!r}")
        except ValueError as e:
            raise ValueError(f"invalid RandAugment policy {policy!r}: {e}") from None
    return RandAugmentPolicy(
        ops=RAND_INCREASING_OPS if increasing else RAND_OPS,
        magnitude=magnitude,
        num_layers=num_layers,
        prob=prob,
        magnitude_std=magnitude_std,
        magnitude_max=magnitude_max,
    )
