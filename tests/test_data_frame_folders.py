"""Frame folders named by other templates than the configured one, and clips at an offset."""

import numpy as np
import pytest
from data_fixtures import frame_id, write_frame_folder

from tdsclip.data.decoding import VideoReadError
from tdsclip.data.frame_folders import count_frame_files, detect_template, read_frame_folder


@pytest.mark.parametrize(
    ("names", "template"),
    [
        (["img_00001.jpg", "img_00002.jpg"], "img_{:05d}.jpg"),  # mmaction2's default
        (["00001.jpg", "00002.jpg", "notes.txt"], "{:05d}.jpg"),  # SSv1
        (["image_0001.png", "image_0002.png"], "image_{:04d}.png"),
        ([f"{i}.jpg" for i in range(1, 12)], "{:d}.jpg"),  # not zero-padded
        # denseflow output: RGB frames beside optical flow, RGB wins though outnumbered
        (
            [f"{p}_{i:05d}.jpg" for p in ("flow_x", "flow_y") for i in range(1, 4)]
            + ["img_00001.jpg", "img_00002.jpg"],
            "img_{:05d}.jpg",
        ),
        (["clip.txt", "README"], None),
    ],
)
def test_detect_template(names, template):
    assert detect_template(names) == template


def read_ids(folder, sampler, **kwargs) -> list[int]:
    frames = read_frame_folder(str(folder), sampler, image_tmpl="{:05d}.jpg", **kwargs)
    return [frame_id(f) for f in frames.reshape(-1, *frames.shape[-3:])]


def test_folder_named_by_another_template_is_read(tmp_path):
    """mmaction2's img_00001.jpg folders with the SSv1 template configured: detected."""
    write_frame_folder(tmp_path / "v", 9, template="img_{:05d}.jpg")
    assert read_ids(tmp_path / "v", lambda n: np.array([0, n - 1])) == [0, 8]  # counted: 9
    assert read_ids(tmp_path / "v", lambda n: np.array([4]), num_frames=9) == [4]
    assert count_frame_files(str(tmp_path / "v"), "img_{:05d}.jpg") == 9


def test_offset_clip_reads_frames_after_the_offset(tmp_path):
    """mmaction2 with_offset: frame i of the clip is file offset + i + 1."""
    write_frame_folder(tmp_path / "long", 20, template="img_{:05d}.jpg")
    ids = read_ids(tmp_path / "long", lambda n: np.arange(n), num_frames=10, offset=5)
    assert ids == list(range(5, 15))


def test_folder_without_numbered_images_names_template_and_a_file(tmp_path):
    folder = tmp_path / "odd"
    folder.mkdir()
    (folder / "shot-a.txt").write_text("x")
    with pytest.raises(VideoReadError) as err:
        read_frame_folder(str(folder), lambda n: np.arange(n), image_tmpl="{:05d}.jpg")
    assert err.value.kind == "unreadable"
    assert "00001.jpg not found" in err.value.reason and "{:05d}.jpg" in err.value.reason
    assert "shot-a.txt" in err.value.reason
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(VideoReadError) as err:
        read_frame_folder(str(empty), lambda n: np.arange(n), image_tmpl="{:05d}.jpg")
    assert err.value.kind == "too_short"
