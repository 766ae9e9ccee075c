"""Every config value checked before anything is built, with messages that name the key.

``validate_config(cfg)`` runs at the start of ``tdsclip.train`` and ``tdsclip.eval`` (and
``predict`` checks its own part): positive sizes, probabilities in [0, 1], known choices,
dims divisible by heads, settings that only work together. The first problem found is raised
as a :class:`~tdsclip.errors.ConfigError` naming the key and what it may be.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, OmegaConf

from tdsclip.data.build import FLIP_MODES, FORMATS
from tdsclip.data.datasets import AUGMENT_ON
from tdsclip.data.decoding import BACKENDS
from tdsclip.engine.precision import PRECISIONS
from tdsclip.errors import ConfigError
from tdsclip.models.td_adapter import TD_KINDS

Check = Callable[[Any], bool]


def _int(low: int, *, optional: bool = False) -> tuple[Check, str]:
    def check(v: Any) -> bool:
        if v is None:
            return optional
        return isinstance(v, int) and not isinstance(v, bool) and v >= low

    return check, f"an integer >= {low}" + (" or null" if optional else "")


def _number(
    low: float,
    high: float = math.inf,
    *,
    low_open: bool = False,
    high_open: bool = False,
    optional: bool = False,
) -> tuple[Check, str]:
    def check(v: Any) -> bool:
        if v is None:
            return optional
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            return False
        above = v > low if low_open else v >= low
        below = v < high if high_open else v <= high
        return above and below

    if math.isfinite(high):
        left, right = "(" if low_open else "[", ")" if high_open else "]"
        text = f"a number in {left}{low}, {high}{right}"
    else:
        text = f"a number {'>' if low_open else '>='} {low}"
    return check, text + (" or null" if optional else "")


def _choice(*choices: Any) -> tuple[Check, str]:
    return (lambda v: v in choices), "one of " + ", ".join(map(str, choices))


def _bool() -> tuple[Check, str]:
    return (lambda v: isinstance(v, bool)), "true or false"


def _pair(low: float, high: float) -> tuple[Check, str]:
    def check(v: Any) -> bool:
        ok = isinstance(v, list | tuple) and len(v) == 2
        return ok and all(_number(low, high)[0](x) for x in v) and v[0] <= v[1]

    return check, f"[min, max] with {low} <= min <= max <= {high}"


def _betas() -> tuple[Check, str]:
    one = _number(0, 1, high_open=True)[0]
    return (lambda v: isinstance(v, list | tuple) and len(v) == 2 and all(map(one, v))), (
        "two numbers in [0, 1)"
    )


RULES: dict[str, tuple[Check, str]] = {
    "seed": _int(0),
    "trainer.device": _choice("auto", "cpu", "cuda"),
    "trainer.precision": _choice(*PRECISIONS),
    "trainer.epochs": _int(1),
    "trainer.eval_every": _int(1),
    "trainer.log_every": _int(1),
    "trainer.checkpoint_every": _int(0),
    "trainer.nproc": _int(1),
    "trainer.max_nonfinite": _int(1),
    "trainer.threads": _int(1, optional=True),
    "trainer.sync_bn": _bool(),
    "trainer.deterministic": _bool(),
    "trainer.grad_checkpointing": _bool(),
    "trainer.compile": _bool(),
    "trainer.cuda_graph": _bool(),
    "trainer.test_after_train": _bool(),
    "optim.lr": _number(0, low_open=True),
    "optim.min_lr": _number(0),
    "optim.weight_decay": _number(0),
    "optim.betas": _betas(),
    "optim.eps": _number(0, low_open=True),
    "optim.warmup_epochs": _number(0),
    "optim.label_smoothing": _number(0, 1, high_open=True),
    "optim.grad_clip": _number(0, low_open=True, optional=True),
    "optim.effective_batch": _int(1, optional=True),
    "data.format": _choice(*FORMATS),
    "data.num_classes": _int(1),
    "data.num_frames": _int(1),
    "data.num_local_frames": _choice(1, 3, 5, 7, 9),
    "data.input_size": _int(1),
    "data.crop_scale": _pair(0, 1),
    "data.crop_ratio": _pair(0.01, 100),
    "data.flip": _choice(*FLIP_MODES),
    "data.grayscale_p": _number(0, 1),
    "data.num_sample": _int(1),
    "data.test_clips": _int(1),
    "data.test_crops": _choice(1, 3),
    "data.backend": _choice(*BACKENDS),
    "data.augment_on": _choice(*AUGMENT_ON),
    "data.batch_size": _int(1),
    "data.workers": _int(0),
    "data.prefetch_factor": _int(1),
    "model.num_classes": _int(1),
    "model.side.dim": _int(1),
    "model.side.heads": _int(1, optional=True),
    "model.side.mlp_ratio": _number(0, low_open=True),
    "model.side.sme": _bool(),
    "model.side.layer_mix": _number(0, 1),
    "model.side.temporal_kernel": _choice(1, 3, 5, 7),
    "model.side.td_kind": _choice(*TD_KINDS),
    "model.side.td_kernel": _choice(1, 3, 5, 7, 9),
    "model.side.td_reduction": _int(1),
    "model.side.drop_path_rate": _number(0, 1, high_open=True),
    "model.side.head_dropout": _number(0, 1, high_open=True),
    "model.backbone.patch_size": _int(1, optional=True),
    "model.backbone.width": _int(1, optional=True),
    "model.backbone.layers": _int(1, optional=True),
    "model.backbone.heads": _int(1, optional=True),
    "model.backbone.mlp_ratio": _number(0, low_open=True, optional=True),
}
_RAND_AUGMENT = re.compile(
    r"rand(-(m\d+(\.\d+)?|n\d+|mstd\d+(\.\d+)?|mmax\d+(\.\d+)?|inc[01]|w\d+))*"
)


def validate_config(cfg: DictConfig) -> None:
    """Raise a ConfigError for the first value that cannot work (see the module docstring)."""
    absent = object()
    for key, (check, allowed) in RULES.items():
        # absent: a key this config has not (eval's), or a required value not yet set (???)
        value = OmegaConf.select(cfg, key, default=absent)
        if OmegaConf.is_config(value):
            value = OmegaConf.to_container(value, resolve=True)
        if value is not absent and not check(value):
            raise ConfigError(key, f"got {value!r}; it must be {allowed}")
    _check_combinations(OmegaConf.to_container(cfg, resolve=True))


def _check_combinations(v: dict[str, Any]) -> None:
    """Settings that are valid alone but not together."""
    data, model = v.get("data") or {}, v.get("model") or {}
    side = model.get("side") or {}
    if side:
        heads = side["heads"] or max(1, side["dim"] // 64)
        if side["dim"] % heads:
            raise ConfigError(
                "model.side.dim",
                f"{side['dim']} is not divisible by "
                f"model.side.heads={heads}; pick a multiple of it",
            )
        if side["dim"] // side["td_reduction"] < 1:
            raise ConfigError(
                "model.side.td_reduction",
                f"{side['td_reduction']} leaves no channel of model.side.dim={side['dim']}",
            )
        if side["sme"] and model.get("num_local_frames", 5) < 3:
            raise ConfigError(
                "model.side.sme",
                "the SME-Adapter's motion path needs "
                "data.num_local_frames >= 3; set 3 or 5, or model.side.sme=false",
            )
    if data and model and data.get("num_classes") != model.get("num_classes"):
        raise ConfigError(
            "model.num_classes",
            f"{model.get('num_classes')} differs from data.num_classes={data.get('num_classes')}",
        )
    _check_backbone(model.get("backbone") or {}, data)
    policy = data.get("rand_augment")
    if policy is not None and not _RAND_AUGMENT.fullmatch(str(policy)):
        raise ConfigError(
            "data.rand_augment",
            f"{policy!r} is not a RandAugment policy "
            "string like rand-m7-n4-mstd0.5-inc1 (timm's syntax), or null",
        )
    resize = data.get("resize")
    if resize is not None and data.get("input_size"):
        short = resize if isinstance(resize, int) else min(resize)
        if short < data["input_size"]:
            raise ConfigError(
                "data.resize",
                f"{resize} is smaller than data.input_size="
                f"{data['input_size']}; the crop needs a larger frame",
            )


def _check_backbone(backbone: dict[str, Any], data: dict[str, Any]) -> None:
    width, heads = backbone.get("width"), backbone.get("heads")
    if width and heads and width % heads:
        raise ConfigError(
            "model.backbone.heads", f"{heads} does not divide model.backbone.width={width}"
        )
    size, input_size = backbone.get("image_size"), data.get("input_size")
    if size is not None and input_size is not None and size != input_size:
        raise ConfigError(
            "model.backbone.image_size",
            f"{size} differs from data.input_size={input_size}; the tower sees the crops",
        )
