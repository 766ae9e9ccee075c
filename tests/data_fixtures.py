"""Small real dataset files for the data tests, written into a test's tmp_path.

Import explicitly (`from data_fixtures import ...`; pytest puts tests/ on sys.path), no conftest.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image

from tdsclip.data.synthetic import make_motion_dataset, write_video
from tdsclip.data.transforms import VideoTrainTransform

NUM_ID_BITS = 8  # frames carry their index as 8 black/white blocks in the top row


def indexed_frames(
    num_frames: int, *, height: int = 64, width: int = 96, seed: int = 0
) -> np.ndarray:
    """uint8 (N, H, W, 3): a moving texture with frame i's index written as blocks of bits.

    Blocks are 16 x 8 pixels (height 16) so the index survives lossy coding; see `frame_id`.
    """
    rng = np.random.default_rng(seed)
    texture = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    frames = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    for i in range(num_frames):
        frame = np.roll(texture, 3 * i, axis=1)
        for b in range(NUM_ID_BITS):
            frame[:16, b * 8 : (b + 1) * 8] = 255 if (i >> b) & 1 else 0
        frames[i] = frame
    return frames


def frame_id(frame: np.ndarray) -> int:
    """Read back the index written by `indexed_frames` from an (H, W, 3) frame."""
    bits = [frame[3:13, b * 8 + 2 : b * 8 + 6].mean() > 128 for b in range(NUM_ID_BITS)]
    return sum(1 << b for b, on in enumerate(bits) if on)


def write_indexed_video(
    path: Path, num_frames: int, *, codec: str, keyframe_interval: int | None = None, **kwargs: int
) -> np.ndarray:
    """Write `indexed_frames(num_frames, **kwargs)` as a video; returns the source frames."""
    frames = indexed_frames(num_frames, **kwargs)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_video(path, frames, codec=codec, keyframe_interval=keyframe_interval)
    return frames


def write_frame_folder(
    folder: Path, num_frames: int, *, skip: tuple[int, ...] = (), template: str = "{:05d}.jpg"
) -> None:
    """Frames named `template.format(1)` ... (1-based, JPEG or PNG by the name), leaving out
    the 1-based numbers in `skip`."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(indexed_frames(num_frames, height=48, width=64)):
        if i + 1 not in skip:
            Image.fromarray(frame).save(folder / template.format(i + 1), quality=95)


def write_corrupt_files(root: Path) -> dict[str, Path]:
    """A garbage-bytes mp4 and a truncated mp4 (header only)."""
    root.mkdir(parents=True, exist_ok=True)
    garbage = root / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    good = root / "full.mp4"
    write_indexed_video(good, 12, codec="h264")
    truncated = root / "truncated.mp4"
    truncated.write_bytes(good.read_bytes()[:400])
    os.remove(good)
    return {"garbage": garbage, "truncated": truncated}


SSV2_CLASSES = [
    "Pushing something from left to right",
    "Pushing something from right to left",
    "Putting something on something",
    "Turning the camera left while filming something",
    "Turning the camera right while filming something",
]


def write_ssv2(root: Path) -> dict[str, Path]:
    """SSv2 layout: videos/<id>.webm (VP9), train/validation/test JSON, labels JSON."""
    videos = root / "videos"
    templates = [
        "Pushing [something] from left to right",
        "Pushing [something] from right to left",
        "Putting [something] on [something]",
        "Turning the camera left while filming [something]",
    ]
    for i in range(4):
        write_indexed_video(videos / f"{100 + i}.webm", 14 + 2 * i, codec="vp9", seed=i)
    train = [
        {"id": str(100 + i), "label": "x", "template": templates[i], "placeholders": ["x"]}
        for i in range(4)
    ]
    files = {
        "root": videos,
        "labels": root / "something-something-v2-labels.json",
        "train": root / "something-something-v2-train.json",
        "val": root / "something-something-v2-validation.json",
        "test": root / "something-something-v2-test.json",
    }
    files["labels"].write_text(
        json.dumps({n: str(i) for i, n in enumerate(SSV2_CLASSES)}, indent=1)
    )
    files["train"].write_text(json.dumps(train, indent=1))
    files["val"].write_text(json.dumps(train[:2], indent=1))
    files["test"].write_text(json.dumps([{"id": "102"}, {"id": "103"}], indent=1))
    return files


def write_ssv1(root: Path) -> dict[str, Path]:
    """SSv1 layout: frames/<id>/00001.jpg, `<id>;<class>` CSVs, one-name-per-line labels CSV."""
    classes = ["Turning the camera right while filming something", *SSV2_CLASSES[:3]]
    for i, n in enumerate((10, 3, 7)):
        write_frame_folder(root / "frames" / str(1 + i), n)
    files = {
        "root": root / "frames",
        "labels": root / "something-something-v1-labels.csv",
        "train": root / "something-something-v1-train.csv",
        "val": root / "something-something-v1-validation.csv",
    }
    files["labels"].write_text("\n".join(classes) + "\n")
    files["train"].write_text(f"1;{classes[1]}\n2;{classes[2]}\n3;{classes[0]}\n")
    files["val"].write_text(f"2;{classes[3]}\n")
    return files


def write_k400(root: Path) -> dict[str, Path]:
    """K400 layout: CSVs + clips in nested folders, one portrait clip, one missing clip."""
    videos = root / "videos"
    write_indexed_video(videos / "train" / "abseiling" / "aaa_000010_000020.mp4", 12, codec="h264")
    write_indexed_video(
        videos / "train" / "zumba" / "bbb_000000_000010.mp4", 10, codec="h264", height=96, width=64
    )
    write_indexed_video(videos / "val" / "ccc_000005_000015.mp4", 9, codec="h264")
    header = "label,youtube_id,time_start,time_end,split\n"
    files = {"root": videos, "train": root / "train.csv", "val": root / "validate.csv"}
    files["train"].write_text(
        header + "zumba,bbb,0,10,train\nabseiling,aaa,10,20,train\n"
        '"air drumming",missing1,3,13,train\n'
    )
    files["val"].write_text(header + "zumba,ccc,5,15,val\n")
    return files


def random_clip(num_frames: int, height: int = 60, width: int = 80, seed: int = 0) -> torch.Tensor:
    """Seeded random uint8 frames (num_frames, 3, height, width)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (num_frames, 3, height, width), dtype=torch.uint8, generator=gen)


def train_transform(**overrides: object) -> VideoTrainTransform:
    """The Something-Something training transform at toy sizes; keyword arguments override."""
    kwargs: dict[str, object] = dict(
        input_size=32,
        resize=(48, 64),
        crop_scale=(0.08, 1.0),
        crop_ratio=(0.75, 4 / 3),
        flip="swap_lr",
        flip_pairs={},
        rand_augment="rand-m7-n4-mstd0.5-inc1",
        grayscale_p=0.0,
    )
    kwargs.update(overrides)
    return VideoTrainTransform(**kwargs)


def data_config(**overrides: object) -> dict[str, object]:
    """A complete data config dict (the keys of configs/data/*.yaml) for tiny test data."""
    cfg: dict[str, object] = {
        "format": "videos",
        "root": "/nonexistent",
        "train_ann": "/nonexistent/train.txt",
        "val_ann": "/nonexistent/val.txt",
        "test_ann": None,
        "labels": None,
        "num_classes": 2,
        "num_frames": 4,
        "num_local_frames": 3,
        "input_size": 32,
        "resize": [40, 48],
        "crop_scale": [0.08, 1.0],
        "crop_ratio": [0.75, 1.3333333],
        "flip": "plain",
        "rand_augment": None,
        "grayscale_p": 0.0,
        "num_sample": 2,
        "augment_on": "worker",
        "test_clips": 2,
        "test_crops": 3,
        "backend": "auto",
        "image_tmpl": "{:05d}.jpg",
        "with_offset": False,
        "batch_size": 2,
        "workers": 0,
        "pin_memory": False,
        "persistent_workers": False,
        "prefetch_factor": 2,
        "synthetic": None,
    }
    cfg.update(overrides)
    return cfg


def files_config(data_format: str, files: dict[str, Path], **overrides: object) -> dict:
    """data_config for the files a write_* helper wrote: its root and whichever lists it has."""
    keys = {"root": "root", "train": "train_ann", "val": "val_ann", "test": "test_ann"}
    paths = {
        key: str(files[name]) for name, key in {**keys, "labels": "labels"}.items() if name in files
    }
    return data_config(**{"format": data_format, **paths, **overrides})


# The training tests' motion dataset: 6 classes x (4 train + 2 val) 32-frame 64x64 videos.
SYNTH = dict(num_train_per_class=4, num_val_per_class=2, num_frames=32, size=64, seed=0)
MOTION = dict(num_classes=6, num_train_per_class=2, num_val_per_class=1, num_frames=12, size=64)


def write_motion(root: Path) -> Path:
    """The built-in motion dataset, tiny: 6 classes, 2 train and 1 val video each, 64x64 H.264."""
    params = {k: v for k, v in MOTION.items() if k != "num_classes"}
    return make_motion_dataset(root / "motion", **params, seed=0)


def motion_config(root: Path, **overrides: object) -> dict[str, object]:
    """data_config for the videos write_motion wrote, with Something-Something's label-swap flip."""
    synthetic = {**MOTION, "seed": 0, "codec": "h264"}
    cfg: dict[str, object] = dict(
        format="synthetic", root=str(root), train_ann=None, val_ann=None, num_classes=6
    )
    return data_config(**{**cfg, "flip": "swap_lr", "synthetic": synthetic, **overrides})


def encode_video(
    path: Path,
    frames: np.ndarray,
    *,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    rotation: int = 0,
    full_range: bool = False,
    max_b_frames: int | None = None,
    keyframe_interval: int | None = None,
    options: dict[str, str] | None = None,
) -> None:
    """Encode uint8 (T, H, W, 3) frames with any PyAV encoder, pixel format and container.

    rotation: counter-clockwise degrees written as the stream's display matrix (what a phone
    writes; a player turns the frames by it). full_range: full-range ("pc") YUV.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=12, options=options or {})
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = pix_fmt
        stream.thread_count = 1
        if keyframe_interval is not None:
            stream.codec_context.gop_size = keyframe_interval
        if max_b_frames is not None:
            stream.codec_context.max_b_frames = max_b_frames
        if full_range:
            stream.codec_context.color_range = 2  # AVCOL_RANGE_JPEG
        if rotation:
            stream.set_display_rotation(rotation)
        for image in frames:
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame = frame.reformat(format=pix_fmt, dst_color_range=2 if full_range else None)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def write_two_stream_video(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """An MP4 with two H.264 video streams; returns (frames of stream 0, of stream 1).

    Stream 1 (16 frames, 96x128) carries the `default` disposition and stream 0 (8 frames,
    64x96) does not, so FFmpeg's best video stream is #1, not the first one.
    """
    first = indexed_frames(8, height=64, width=96, seed=1)
    second = indexed_frames(16, height=96, width=128, seed=2)
    with av.open(str(path), "w") as container:
        streams = []
        for frames, default in ((first, False), (second, True)):
            stream = container.add_stream("libx264", rate=12, options={"crf": "18"})
            stream.height, stream.width = frames.shape[1:3]
            stream.pix_fmt = "yuv420p"
            stream.disposition = av.stream.Disposition(int(default))  # 1: default
            streams.append(stream)
        for i in range(len(second)):
            for stream, frames in zip(streams, (first, second), strict=True):
                if i < len(frames):
                    image = av.VideoFrame.from_ndarray(frames[i], format="rgb24")
                    container.mux(stream.encode(image))
        for stream in streams:
            container.mux(stream.encode(None))
    return first, second


def write_audio_only(path: Path) -> None:
    """An MP4 with one AAC audio stream and no video (an audio file named .mp4)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        samples = np.zeros((1, 1024), dtype=np.float32)
        for _ in range(8):
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            frame.sample_rate = 16000
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
