"""Small synthetic motion datasets written as real video files, for tests and CPU smoke runs.

A textured square moves over a textured background. The class is only visible in the motion:
every single frame has the same distribution whatever the class, because positions live on a
torus (the square wraps around the frame edges) with a uniformly random phase, and sizes cycle
through their range with a uniformly random phase too. Position at frame t is therefore uniform
for every t and class; so is the size. Telling the classes apart needs the order of frames.

Output: the generic list format (`train.txt`, `val.txt` with `<relative path> <label>` lines,
`labels.txt` with class names) plus `manifest.json` recording the parameters, so a second call
with the same parameters reuses the files.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

import av
import numpy as np
from PIL import Image

logger = logging.getLogger(__name__)

MOTION_CLASSES = (
    "Moving something from left to right",
    "Moving something from right to left",
    "Moving something from top to bottom",
    "Moving something from bottom to top",
    "Something getting bigger",
    "Something getting smaller",
)
# label -> (dx sign, dy sign, size-change sign)
_MOTIONS = ((1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1))
_CODECS = {"h264": ("libx264", ".mp4"), "vp9": ("libvpx-vp9", ".webm")}
_MANIFEST = "manifest.json"
_GENERATOR_VERSION = 2
_FPS = 12


def motion_trajectory(
    label: int, *, num_frames: int, size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Object centre (T, 2) as (x, y) in [0, size) on the torus, and side length (T,).

    For every class and every frame t, x and y are uniform on [0, size) and the side is
    uniform on [size/4, size/2]: only the change over time depends on the class.
    """
    dx_sign, dy_sign, grow_sign = _MOTIONS[label]
    min_side, max_side = 0.25 * size, 0.5 * size
    start = rng.uniform(0, size, 2)  # (x, y), uniform on the torus
    speed = rng.uniform(0.5, 1.0) / num_frames  # 0.5-1 frame widths (or size cycles) per clip
    size_phase = rng.uniform(0.0, 1.0)
    t = np.arange(num_frames, dtype=np.float64)[:, None]  # (T, 1)
    centres = (start + np.array([dx_sign, dy_sign]) * speed * size * t) % size  # (T, 2)
    phase = (size_phase + grow_sign * speed * t[:, 0]) % 1.0  # (T,)
    return centres, min_side + (max_side - min_side) * phase


def render_motion_clip(
    label: int, *, num_frames: int, size: int, rng: np.random.Generator
) -> np.ndarray:
    """Frames of one video of class `label`: uint8 (num_frames, size, size, 3)."""
    grid = max(2, size // 8)
    background = Image.fromarray(rng.integers(30, 226, (grid, grid, 3), dtype=np.uint8))
    background = np.asarray(background.resize((size, size), Image.BILINEAR), dtype=np.float32)
    background = background + rng.normal(0.0, 10.0, background.shape)  # (size, size, 3)
    texture = rng.integers(0, 256, (4, 4, 3)).astype(np.float32)  # the object's own pattern
    centres, sides = motion_trajectory(label, num_frames=num_frames, size=size, rng=rng)

    coords = np.arange(size, dtype=np.float32)
    frames = np.empty((num_frames, size, size, 3), dtype=np.uint8)
    for t, ((x, y), side) in enumerate(zip(centres, sides, strict=True)):
        # Offsets from the object centre on the torus, in [-size/2, size/2).
        ox = (coords - x + size / 2) % size - size / 2  # (size,)
        oy = (coords - y + size / 2) % size - size / 2  # (size,)
        inside_x, inside_y = np.abs(ox) < side / 2, np.abs(oy) < side / 2
        u = np.clip(((ox / side + 0.5) * 4).astype(int), 0, 3)  # texture column per x
        v = np.clip(((oy / side + 0.5) * 4).astype(int), 0, 3)  # texture row per y
        frame = background.copy()
        mask = inside_y[:, None] & inside_x[None, :]  # (size, size)
        frame[mask] = texture[v[:, None], u[None, :]][mask]
        frames[t] = np.clip(frame, 0, 255).astype(np.uint8)
    return frames


def write_video(
    path: Path,
    frames: np.ndarray,
    *,
    codec: str = "h264",
    fps: int = _FPS,
    keyframe_interval: int | None = None,
) -> None:
    """Encode uint8 (T, H, W, 3) frames (H, W even) with PyAV: H.264 mp4 or VP9 webm.

    keyframe_interval: the GOP size (None: the encoder's default, usually one keyframe).
    """
    if codec not in _CODECS:
        raise ValueError(f"unknown codec {codec!r}; choose one of {tuple(_CODECS)}")
    encoder, _ = _CODECS[codec]
    options = (
        {"preset": "veryfast", "crf": "18"}
        if codec == "h264"
        else {"deadline": "realtime", "cpu-used": "8", "crf": "20", "b": "0"}
    )
    try:
        with av.open(str(path), "w") as container:
            stream = container.add_stream(encoder, rate=fps, options=options)
            stream.height, stream.width = frames.shape[1:3]
            stream.pix_fmt = "yuv420p"
            stream.thread_count = 1
            if keyframe_interval is not None:
                stream.codec_context.gop_size = keyframe_interval
            for image in frames:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
            container.mux(stream.encode(None))
    except av.FFmpegError as e:
        hint = ""
        if codec == "vp9" and "decord" in sys.modules:
            hint = (
                " (decord was imported before PyAV: its bundled libvpx shadows PyAV's and breaks "
                "VP9 encoding; import av or tdsclip.data before decord)"
            )
        raise RuntimeError(f"cannot encode {path} with {encoder}: {e}{hint}") from e


def _params(**kwargs: object) -> dict[str, object]:
    return {"generator": "tdsclip.data.synthetic", "version": _GENERATOR_VERSION, **kwargs}


def _is_complete(root: Path, params: dict[str, object]) -> bool:
    try:
        manifest = json.loads((root / _MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    files = ("train.txt", "val.txt", "labels.txt")
    return manifest == params and all((root / name).is_file() for name in files)


def _generate(directory: Path, params: dict[str, object]) -> None:
    num_classes = int(params["num_classes"])
    num_frames, size = int(params["num_frames"]), int(params["size"])
    encoder_ext = _CODECS[str(params["codec"])][1]
    splits = {"train": int(params["num_train_per_class"]), "val": int(params["num_val_per_class"])}
    for split_id, (split, per_class) in enumerate(splits.items()):
        lines = []
        for label in range(num_classes):
            (directory / split / f"{label:02d}").mkdir(parents=True)
            for i in range(per_class):
                rng = np.random.default_rng([int(params["seed"]), split_id, label, i])
                frames = render_motion_clip(label, num_frames=num_frames, size=size, rng=rng)
                relative = f"{split}/{label:02d}/{split}_{label:02d}_{i:04d}{encoder_ext}"
                write_video(directory / relative, frames, codec=str(params["codec"]))
                lines.append(f"{relative} {label}\n")
        (directory / f"{split}.txt").write_text("".join(lines))
    (directory / "labels.txt").write_text("".join(f"{n}\n" for n in MOTION_CLASSES[:num_classes]))
    # Written last: its presence marks a complete dataset.
    (directory / _MANIFEST).write_text(json.dumps(params, indent=2) + "\n")


def make_motion_dataset(
    root: str | os.PathLike[str],
    *,
    num_train_per_class: int,
    num_val_per_class: int,
    num_frames: int,
    size: int,
    seed: int,
    codec: str = "h264",
    num_classes: int = len(MOTION_CLASSES),
) -> Path:
    """Write (or reuse) a synthetic motion dataset at `root`; returns `root`.

    Files are generated in a temporary sibling directory and renamed into place, so `root` is
    either complete or absent, also when several processes (ranks) call this at once. A `root`
    holding a dataset with other parameters is replaced; a non-empty `root` without a manifest
    is left alone (error).
    """
    root = Path(root)
    if codec not in _CODECS:
        raise ValueError(f"unknown codec {codec!r}; choose one of {tuple(_CODECS)}")
    if not 1 <= num_classes <= len(MOTION_CLASSES):
        raise ValueError(f"num_classes must be in [1, {len(MOTION_CLASSES)}], got {num_classes}")
    if size < 16 or size % 2:
        raise ValueError(f"size must be even and >= 16, got {size}")
    if num_frames < 1 or num_train_per_class < 1 or num_val_per_class < 1:
        raise ValueError("num_frames, num_train_per_class and num_val_per_class must be >= 1")
    params = _params(
        num_classes=num_classes,
        num_train_per_class=num_train_per_class,
        num_val_per_class=num_val_per_class,
        num_frames=num_frames,
        size=size,
        seed=seed,
        codec=codec,
    )
    if _is_complete(root, params):
        return root
    if root.exists() and any(root.iterdir()) and not (root / _MANIFEST).exists():
        raise FileExistsError(
            f"{root} is not empty and holds no synthetic dataset; pick another root"
        )

    start = time.perf_counter()
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        _generate(tmp, params)
        if root.exists():  # an older synthetic dataset with other parameters
            stale = root.with_name(f".{root.name}.stale-{uuid.uuid4().hex}")
            os.rename(root, stale)
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.rename(tmp, root)
        except OSError:
            if not _is_complete(root, params):  # lost a race to a different dataset
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("wrote synthetic motion dataset to %s in %.1fs", root, time.perf_counter() - start)
    return root
