"""The one place that reads the data config (the keys of configs/data/*.yaml).

`build_dataset(data_cfg, split)` turns the config into typed dataset, reader and transform
objects; `read_video_views(path, data_cfg)` gives the test-protocol views of one video file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from tdsclip.data.annotations import (
    Annotations,
    read_class_names,
    read_kinetics,
    read_rawframe_list,
    read_ssv1,
    read_ssv2,
    read_video_list,
)
from tdsclip.data.datasets import (
    AUGMENT_ON,
    AugmentOn,
    ClipReader,
    EvalViews,
    VideoEvalDataset,
    VideoTrainDataset,
)
from tdsclip.data.decoding import BACKENDS, read_video_frames
from tdsclip.data.loader import SPLITS
from tdsclip.data.rand_augment import parse_policy
from tdsclip.data.synthetic import make_motion_dataset
from tdsclip.data.transforms import (
    FLIP_MODES,
    FlipMode,
    ResizeSpec,
    VideoEvalTransform,
    VideoTrainTransform,
    flip_label_map,
)
from tdsclip.errors import ConfigError, MissingFileError

FORMATS = ("ssv1", "ssv2", "k400", "videos", "rawframes", "synthetic")
SYNTHETIC_KEYS = (
    "num_classes",
    "num_train_per_class",
    "num_val_per_class",
    "num_frames",
    "size",
    "seed",
    "codec",
)


@dataclass(frozen=True)
class DataConfig:
    """Validated data config; field names are the YAML keys."""

    format: str
    root: str
    train_ann: str | None
    val_ann: str | None
    test_ann: str | None
    labels: str | None
    num_classes: int
    num_frames: int
    num_local_frames: int
    input_size: int
    resize: ResizeSpec
    crop_scale: tuple[float, float]
    crop_ratio: tuple[float, float]
    flip: FlipMode
    rand_augment: str | None
    grayscale_p: float
    num_sample: int
    augment_on: AugmentOn
    test_clips: int
    test_crops: int
    backend: str
    image_tmpl: str
    with_offset: bool
    batch_size: int
    workers: int
    pin_memory: bool
    persistent_workers: bool
    prefetch_factor: int
    synthetic: dict[str, Any] | None

    @classmethod
    def from_mapping(cls, data_cfg: Mapping[str, Any]) -> DataConfig:
        """Check keys and values of a DictConfig or plain dict; raises ValueError on problems."""
        cfg = _plain(data_cfg)
        names = [f.name for f in fields(cls)]
        missing = [n for n in names if n not in cfg]
        unknown = sorted(set(cfg) - set(names))
        if missing or unknown:
            raise ConfigError("data", f"missing keys {missing}, unknown keys {unknown}")
        resize = cfg["resize"]
        if isinstance(resize, list | tuple):
            if len(resize) != 2:
                raise ConfigError("data.resize", f"must be an int or [height, width], got {resize}")
            resize = (int(resize[0]), int(resize[1]))
        out = cls(
            format=str(cfg["format"]),
            root=str(cfg["root"]),
            train_ann=_opt_str(cfg["train_ann"]),
            val_ann=_opt_str(cfg["val_ann"]),
            test_ann=_opt_str(cfg["test_ann"]),
            labels=_opt_str(cfg["labels"]),
            num_classes=int(cfg["num_classes"]),
            num_frames=int(cfg["num_frames"]),
            num_local_frames=int(cfg["num_local_frames"]),
            input_size=int(cfg["input_size"]),
            resize=int(resize) if isinstance(resize, int) else resize,
            crop_scale=_pair(cfg["crop_scale"], "crop_scale"),
            crop_ratio=_pair(cfg["crop_ratio"], "crop_ratio"),
            flip=cfg["flip"],
            rand_augment=_opt_str(cfg["rand_augment"]),
            grayscale_p=float(cfg["grayscale_p"]),
            num_sample=int(cfg["num_sample"]),
            augment_on=cfg["augment_on"],
            test_clips=int(cfg["test_clips"]),
            test_crops=int(cfg["test_crops"]),
            backend=str(cfg["backend"]),
            image_tmpl=str(cfg["image_tmpl"]),
            with_offset=_bool(cfg["with_offset"], "with_offset"),
            batch_size=int(cfg["batch_size"]),
            workers=int(cfg["workers"]),
            pin_memory=bool(cfg["pin_memory"]),
            persistent_workers=bool(cfg["persistent_workers"]),
            prefetch_factor=int(cfg["prefetch_factor"]),
            synthetic=dict(cfg["synthetic"]) if cfg["synthetic"] is not None else None,
        )
        out._validate()
        return out

    def _validate(self) -> None:
        def fail(message: str) -> None:
            raise ConfigError("data", message)

        if self.format not in FORMATS:
            fail(f"unknown format {self.format!r}; choose one of {FORMATS}")
        if self.flip not in FLIP_MODES:
            fail(f"unknown flip {self.flip!r}; choose one of {FLIP_MODES}")
        if self.augment_on not in AUGMENT_ON:
            fail(f"augment_on must be one of {AUGMENT_ON}, got {self.augment_on!r}")
        if self.augment_on == "device" and self.rand_augment is not None:
            try:
                parse_policy(self.rand_augment)
            except ValueError as e:
                fail(f"rand_augment: {e}")
        if self.backend not in BACKENDS:
            fail(f"unknown backend {self.backend!r}; choose one of {BACKENDS}")
        if self.num_local_frames < 1 or self.num_local_frames % 2 == 0:
            fail(f"num_local_frames must be odd (1, 3, 5), got {self.num_local_frames}")
        for key in ("num_classes", "num_frames", "input_size", "num_sample", "test_clips"):
            if getattr(self, key) < 1:
                fail(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.test_crops not in (1, 3):
            fail(f"test_crops must be 1 or 3, got {self.test_crops}")
        short_side = self.resize if isinstance(self.resize, int) else min(self.resize)
        if short_side < self.input_size:
            fail(f"resize {self.resize} is smaller than input_size {self.input_size}")
        if self.format == "synthetic":
            if self.synthetic is None or sorted(self.synthetic) != sorted(SYNTHETIC_KEYS):
                fail(f"format synthetic needs `synthetic` with exactly the keys {SYNTHETIC_KEYS}")
            if int(self.synthetic["num_classes"]) != self.num_classes:
                fail("synthetic.num_classes and num_classes differ")
        elif self.train_ann is None or self.val_ann is None:
            fail(f"format {self.format} needs train_ann and val_ann")
        if self.format in ("ssv1", "ssv2") and self.labels is None:
            fail(f"format {self.format} needs the labels file")
        if self.with_offset and self.format != "rawframes":
            fail(f"with_offset is a rawframes list option; format is {self.format}")


def _plain(data_cfg: Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(data_cfg, DictConfig):
        return OmegaConf.to_container(data_cfg, resolve=True)  # type: ignore[return-value]
    return dict(data_cfg)


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _bool(value: Any, key: str) -> bool:
    # bool("false") is True: a quoted YAML value must not silently turn an option on.
    if not isinstance(value, bool):
        raise ConfigError(f"data.{key}", f"must be true or false, got {value!r}")
    return value


def _pair(value: Any, key: str) -> tuple[float, float]:
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise ConfigError(f"data.{key}", f"must be [min, max], got {value!r}")
    return float(value[0]), float(value[1])


def _annotation_key(cfg: DataConfig, split: str) -> str:
    """The config key of the split's list: the test split reads val_ann without a test_ann."""
    if split == "test" and cfg.test_ann is None:
        return "val_ann"
    return f"{split}_ann"


def _generic_classes(cfg: DataConfig, labels: str | None) -> list[str]:
    if labels is None:
        return [str(i) for i in range(cfg.num_classes)]
    return read_class_names(labels)


_DOC_ANCHORS = {
    "ssv2": "something-something-v2",
    "ssv1": "something-something-v1",
    "k400": "kinetics-400",
    "videos": "your-own-dataset",
    "rawframes": "your-own-dataset",
}


def _require_files(cfg: DataConfig, ann_key: str) -> None:
    """The dataset's folder, list (config key ``ann_key``) and labels exist, else an error
    naming the key to set and the layout to follow (docs/datasets.md)."""
    wanted = [("root", cfg.root), (ann_key, getattr(cfg, ann_key))]
    if cfg.labels is not None:
        wanted.append(("labels", cfg.labels))
    for key, path in wanted:
        if not os.path.exists(path):
            anchor = _DOC_ANCHORS.get(cfg.format, "")
            raise MissingFileError(
                f"data.{key}: {os.path.normpath(path)} not found (the {cfg.format} dataset's "
                f"{'folder' if key == 'root' else 'file'})",
                hint=(
                    "set data.root to the folder of the videos (or frame folders)"
                    if key == "root"
                    else "set data.root (the list and label files are looked "
                    f"for beside that folder) or data.{key}"
                )
                + f"; layout: docs/datasets.md#{anchor}",
            )


def load_annotations(cfg: DataConfig, split: str) -> Annotations:
    """Records and class names of a split, read as the dataset's release ships them."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}")
    if cfg.format == "synthetic":
        root = make_motion_dataset(Path(cfg.root), **(cfg.synthetic or {}))
        ann = root / ("train.txt" if split == "train" else "val.txt")
        annotations = read_video_list(ann, root, read_class_names(root / "labels.txt"))
    else:
        ann_key = _annotation_key(cfg, split)
        _require_files(cfg, ann_key)
        ann = str(getattr(cfg, ann_key))
        if cfg.format == "ssv2":
            annotations = read_ssv2(
                ann, str(cfg.labels), cfg.root, allow_unlabelled=split == "test"
            )
        elif cfg.format == "ssv1":
            annotations = read_ssv1(ann, str(cfg.labels), cfg.root)
        elif cfg.format == "k400":
            annotations = read_kinetics(
                ann, cfg.root, labels_file=cfg.labels, train_ann_file=str(cfg.train_ann)
            )
        elif cfg.format == "videos":
            annotations = read_video_list(ann, cfg.root, _generic_classes(cfg, cfg.labels))
        else:
            annotations = read_rawframe_list(
                ann, cfg.root, _generic_classes(cfg, cfg.labels), with_offset=cfg.with_offset
            )
    if len(annotations.classes) != cfg.num_classes:
        raise ConfigError(
            "data.num_classes",
            f"{cfg.num_classes}, but the annotations define {len(annotations.classes)} classes",
            hint=f"set data.num_classes={len(annotations.classes)}, or point the config at the "
            "right list and label files",
        )
    return annotations


def _eval_views(cfg: DataConfig, split: str) -> EvalViews:
    test = split == "test"
    transform = VideoEvalTransform(
        input_size=cfg.input_size, resize=cfg.resize, num_crops=cfg.test_crops if test else 1
    )
    return EvalViews(
        transform=transform,
        num_frames=cfg.num_frames,
        num_local_frames=cfg.num_local_frames,
        num_clips=cfg.test_clips if test else 1,
    )


def build_dataset(data_cfg: Mapping[str, Any], split: str) -> VideoTrainDataset | VideoEvalDataset:
    """Dataset of `split` ("train", "val", "test") from the data config.

    train: TSN clips, `num_sample` augmented copies; val: segment centres, 1 centre crop;
    test: `test_clips` clips x `test_crops` crops. See tdsclip.data.datasets for item layouts.
    """
    cfg = DataConfig.from_mapping(data_cfg)
    annotations = load_annotations(cfg, split)
    reader = ClipReader(backend=cfg.backend, image_tmpl=cfg.image_tmpl)
    if split == "train":
        transform = VideoTrainTransform(
            input_size=cfg.input_size,
            resize=cfg.resize,
            crop_scale=cfg.crop_scale,
            crop_ratio=cfg.crop_ratio,
            flip=cfg.flip,
            flip_pairs=flip_label_map(annotations.classes),
            rand_augment=cfg.rand_augment,
            grayscale_p=cfg.grayscale_p,
        )
        return VideoTrainDataset(
            annotations.records,
            annotations.classes,
            reader=reader,
            transform=transform,
            num_frames=cfg.num_frames,
            num_local_frames=cfg.num_local_frames,
            num_sample=cfg.num_sample,
            augment_on=cfg.augment_on,
        )
    return VideoEvalDataset(
        annotations.records, annotations.classes, reader=reader, views=_eval_views(cfg, split)
    )


def read_video_views(path: str, data_cfg: Mapping[str, Any]) -> torch.Tensor:
    """Test-protocol views of one video file: uint8 (V, T, M, 3, H, W), V = clips * crops.

    Raises tdsclip.data.decoding.VideoReadError when the file cannot be read.
    """
    cfg = DataConfig.from_mapping(data_cfg)
    views = _eval_views(cfg, "test")
    frames = read_video_frames(os.fspath(path), views.sample, backend=cfg.backend)
    return views(frames)  # (V, T, M, 3, H, W)
