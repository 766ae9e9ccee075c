"""configs/data/*.yaml: one key set, validated by the factory, the synthetic default builds."""

from pathlib import Path

import pytest
import torch
from data_fixtures import data_config
from omegaconf import OmegaConf

from tdsclip.data import DataConfig, build_dataset

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs" / "data"
NAMES = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
KEYS = [f for f in DataConfig.__dataclass_fields__]


def load(name: str, **overrides):
    """configs/data/NAME.yaml as the `data` node beside a `paths` node (as Hydra composes it)."""
    root = OmegaConf.create({"paths": {"data_dir": "/datasets"}})
    root.data = OmegaConf.load(CONFIG_DIR / f"{name}.yaml")
    cfg = root.data
    OmegaConf.set_struct(cfg, True)
    for key, value in overrides.items():
        cfg[key] = value
    return cfg


def test_every_format_has_a_config():
    assert NAMES == ["k400", "rawframes", "ssv1", "ssv2", "synthetic", "videos"]


@pytest.mark.parametrize("name", NAMES)
def test_config_has_exactly_the_data_keys_and_validates(name):
    cfg = load(name)
    assert list(cfg) == KEYS
    if OmegaConf.is_missing(cfg, "num_classes"):  # generic formats: the user must set it
        cfg.num_classes = 10
    parsed = DataConfig.from_mapping(cfg)
    assert parsed.format == name
    if name != "synthetic":
        assert parsed.root.startswith("/datasets/")


def test_struct_mode_catches_typos():
    cfg = load("ssv2")
    with pytest.raises(Exception, match="num_frame"):
        cfg.num_frame = 16


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"format": "ucf101"}, "unknown format 'ucf101'"),
        ({"flip": "mirror"}, "unknown flip 'mirror'"),
        ({"backend": "opencv"}, "unknown backend 'opencv'"),
        ({"num_local_frames": 4}, "num_local_frames must be odd"),
        ({"test_crops": 5}, "test_crops must be 1 or 3"),
        ({"resize": 24}, "smaller than input_size"),
        ({"num_frmes": 8}, r"unknown keys \['num_frmes'\]"),
        ({"with_offset": True}, "with_offset is a rawframes list option; format is videos"),
        ({"format": "rawframes", "with_offset": "false"}, "with_offset: must be true or false"),
    ],
)
def test_bad_values_are_clear_errors(overrides, message):
    with pytest.raises(ValueError, match=message):
        DataConfig.from_mapping(data_config(**overrides))


def test_missing_key_is_named():
    cfg = data_config()
    del cfg["image_tmpl"]
    with pytest.raises(ValueError, match=r"missing keys \['image_tmpl'\]"):
        DataConfig.from_mapping(cfg)


def test_num_classes_must_match_the_annotations(tmp_path):
    (tmp_path / "l.txt").write_text("a.mp4 0\n")
    (tmp_path / "labels.txt").write_text("x\ny\nz\n")
    cfg = data_config(
        root=str(tmp_path), train_ann=str(tmp_path / "l.txt"), labels=str(tmp_path / "labels.txt")
    )
    with pytest.raises(ValueError, match=r"data\.num_classes: 2, but the annotations define 3"):
        build_dataset(cfg, "train")


def test_default_synthetic_config_generates_quickly_and_loads(tmp_path):
    cfg = load("synthetic", root=str(tmp_path / "synthetic"))
    train = build_dataset(cfg, "train")
    val = build_dataset(cfg, "val")
    assert (len(train), len(val), train.num_classes) == (240, 72, 6)
    item = train[0]
    assert item["video"].shape == (1, 8, 5, 3, 48, 48) and item["video"].dtype == torch.uint8
    assert build_dataset(cfg, "test")[0]["video"].shape == (6, 8, 5, 3, 48, 48)
