"""The synthetic motion dataset: real files, reused by manifest, class visible only in motion."""

import json
import os

import av
import numpy as np
import pytest

from tdsclip.data.annotations import read_class_names, read_video_list
from tdsclip.data.synthetic import (
    MOTION_CLASSES,
    make_motion_dataset,
    motion_trajectory,
    render_motion_clip,
)
from tdsclip.data.transforms import flip_label_map

PARAMS = dict(num_train_per_class=2, num_val_per_class=1, num_frames=10, size=32, seed=0)


def test_writes_real_videos_in_the_generic_list_format(tmp_path):
    root = make_motion_dataset(tmp_path / "m", **PARAMS)
    classes = read_class_names(root / "labels.txt")
    assert classes == list(MOTION_CLASSES)
    train = read_video_list(root / "train.txt", root, classes)
    val = read_video_list(root / "val.txt", root, classes)
    assert [r.label for r in train.records] == [c for c in range(6) for _ in range(2)]
    assert len(val.records) == 6
    with av.open(train.records[0].path) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    assert len(frames) == 10 and frames[0].shape == (32, 32, 3)
    # the left/right pair swaps under a horizontal flip
    assert flip_label_map(classes) == {0: 1, 1: 0}
    assert sorted(os.listdir(tmp_path)) == ["m"]  # no temporary directories left behind


def test_reuses_a_complete_dataset_and_replaces_other_parameters(tmp_path):
    root = make_motion_dataset(tmp_path / "m", **PARAMS)
    stamp = os.stat(root / "train.txt").st_mtime_ns
    assert make_motion_dataset(tmp_path / "m", **PARAMS) == root
    assert os.stat(root / "train.txt").st_mtime_ns == stamp  # reused, not rewritten
    make_motion_dataset(tmp_path / "m", **{**PARAMS, "seed": 1}, codec="vp9", num_classes=2)
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["seed"] == 1 and manifest["codec"] == "vp9"
    assert read_class_names(root / "labels.txt") == list(MOTION_CLASSES[:2])
    assert (root / "train" / "00" / "train_00_0000.webm").is_file()
    assert sorted(os.listdir(tmp_path)) == ["m"]


def test_refuses_to_overwrite_foreign_data(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="holds no synthetic dataset"):
        make_motion_dataset(tmp_path / "mine", **PARAMS)


@pytest.mark.parametrize("label", range(6))
def test_single_frames_do_not_reveal_the_class(label):
    """Position and size in any frame are uniform whatever the class (KS distance)."""
    draws = [
        motion_trajectory(label, num_frames=8, size=32, rng=np.random.default_rng(s))
        for s in range(400)
    ]
    grid = np.linspace(0, 1, 101)
    for t in (0, 4, 7):
        for values in (
            [c[t, 0] / 32 for c, _ in draws],
            [c[t, 1] / 32 for c, _ in draws],
            [(s[t] - 8) / 8 for _, s in draws],  # side in [8, 16] -> [0, 1]
        ):
            cdf = np.searchsorted(np.sort(values), grid, side="right") / len(values)
            assert np.abs(cdf - grid).max() < 0.1  # a fixed start or size would be ~0.5-1


def _phase(frames: np.ndarray, axis: int) -> np.ndarray:
    """Circular mean position of the change between consecutive frames, along an axis."""
    change = np.abs(np.diff(frames.astype(np.float32), axis=0)).sum(-1)  # (T-1, H, W)
    profile = change.sum(axis=2 - axis)  # (T-1, size) along the chosen axis
    angles = np.exp(2j * np.pi * np.arange(profile.shape[1]) / profile.shape[1])
    return np.angle(profile @ angles)  # (T-1,)


@pytest.mark.parametrize(("label", "axis", "sign"), [(0, 1, 1), (1, 1, -1), (2, 0, 1), (3, 0, -1)])
def test_motion_direction_matches_the_class(label, axis, sign):
    votes = 0
    for seed in range(20):
        clip = render_motion_clip(label, num_frames=12, size=32, rng=np.random.default_rng(seed))
        step = np.angle(np.exp(1j * np.diff(_phase(clip, axis))))  # wrapped phase steps
        votes += np.sign(np.median(step)) == sign
    assert votes >= 18
