"""Decoding throughput per worker: clips of T x M frames per second, per backend and container.

Writes its own test videos (VP9 WebM like SSv2, H.264 MP4 like Kinetics), then reads random
training clips (TSN sampling, M local frames around each centre) the way a DataLoader worker
does: one process, one decoding thread. Also times the full training item (decode + the
Something-Something augmentation with RandAugment, 2 repeats) through the `auto` backend.

    python scripts/benchmark_data.py --clips 50 --json benchmark.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch

from tdsclip.data.annotations import VideoRecord
from tdsclip.data.datasets import ClipReader, VideoTrainDataset
from tdsclip.data.decoding import BackendUnavailableError, read_video_frames
from tdsclip.data.sampling import local_windows, train_centres
from tdsclip.data.synthetic import write_video
from tdsclip.data.transforms import VideoTrainTransform, flip_label_map

CONTAINERS = {"webm": "vp9", "mp4": "h264"}


def make_source(
    path: Path, *, codec: str, height: int, width: int, seconds: float, fps: int
) -> int:
    """A smooth texture panning under a moving noise pattern; returns the number of frames."""
    rng = np.random.default_rng(0)
    num_frames = round(seconds * fps)
    coarse = rng.uniform(0, 255, (height // 16 + 2, width // 16 + 2, 3)).astype(np.float32)
    smooth = (
        torch.nn.functional.interpolate(
            torch.from_numpy(coarse).permute(2, 0, 1)[None], scale_factor=16, mode="bicubic"
        )[0]
        .permute(1, 2, 0)
        .numpy()
    )  # (H', W', 3)
    frames = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    for t in range(num_frames):
        view = np.roll(smooth, (t, 2 * t), axis=(0, 1))[:height, :width]
        frames[t] = np.clip(view + rng.normal(0, 6, view.shape), 0, 255).astype(np.uint8)
    write_video(path, frames, codec=codec, fps=fps)
    return num_frames


def time_clips(path: str, backend: str, *, clips: int, num_frames: int, num_local: int) -> float:
    """Seconds per clip, reading `clips` random training clips (after 2 warm-up clips)."""

    def sampler(seed: int):
        def sample(n: int) -> np.ndarray:
            centres = train_centres(n, num_frames, np.random.default_rng(seed))
            return local_windows(centres, num_local, n)  # (T, M)

        return sample

    for seed in range(2):
        read_video_frames(path, sampler(seed), backend=backend)
    start = time.perf_counter()
    for seed in range(clips):
        frames = read_video_frames(path, sampler(seed + 2), backend=backend)
        assert frames.shape[:2] == (num_frames, num_local)
    return (time.perf_counter() - start) / clips


def time_train_items(path: str, *, clips: int, num_frames: int, num_local: int) -> float:
    """Seconds per full training item: decode + SS augmentation (RandAugment), 2 repeats."""
    classes = ["a", "b"]
    dataset = VideoTrainDataset(
        [VideoRecord(path, 0)],
        classes,
        reader=ClipReader(backend="auto", image_tmpl="{:05d}.jpg"),
        transform=VideoTrainTransform(
            input_size=224,
            resize=(256, 320),
            crop_scale=(0.08, 1.0),
            crop_ratio=(0.75, 4 / 3),
            flip="swap_lr",
            flip_pairs=flip_label_map(classes),
            rand_augment="rand-m7-n4-mstd0.5-inc1",
            grayscale_p=0.0,
        ),
        num_frames=num_frames,
        num_local_frames=num_local,
        num_sample=2,
    )
    dataset[(0, 0)]
    start = time.perf_counter()
    for epoch in range(clips):
        dataset[(0, epoch + 1)]
    return (time.perf_counter() - start) / clips


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", nargs="+", default=["decord", "pyav", "torchcodec", "auto"])
    parser.add_argument("--clips", type=int, default=50, help="timed clips per measurement")
    parser.add_argument("--num-frames", type=int, default=8, help="T segments")
    parser.add_argument("--num-local-frames", type=int, default=5, help="M local frames")
    parser.add_argument("--height", type=int, default=224)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--webm-fps", type=int, default=12, help="SSv2 videos are 12 fps")
    parser.add_argument("--mp4-fps", type=int, default=30, help="Kinetics videos: 25-30 fps")
    parser.add_argument("--skip-train-items", action="store_true", help="decode timings only")
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    args = parser.parse_args()
    torch.set_num_threads(1)  # one DataLoader worker

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for ext, codec in CONTAINERS.items():
            fps = args.webm_fps if ext == "webm" else args.mp4_fps
            path = Path(tmp) / f"source.{ext}"
            n = make_source(
                path,
                codec=codec,
                height=args.height,
                width=args.width,
                seconds=args.seconds,
                fps=fps,
            )
            source = f"{ext} ({codec}, {args.width}x{args.height}, {fps} fps, {n} frames)"
            measurements = [(b, "decode") for b in args.backends]
            if not args.skip_train_items:
                measurements.append(("auto", "decode+augment"))
            for backend, what in measurements:
                row = {"source": source, "backend": backend, "work": what}
                try:
                    if what == "decode":
                        seconds = time_clips(
                            str(path),
                            backend,
                            clips=args.clips,
                            num_frames=args.num_frames,
                            num_local=args.num_local_frames,
                        )
                    else:
                        seconds = time_train_items(
                            str(path),
                            clips=args.clips,
                            num_frames=args.num_frames,
                            num_local=args.num_local_frames,
                        )
                    row.update(clips_per_s=1.0 / seconds, ms_per_clip=1000.0 * seconds)
                except BackendUnavailableError as e:
                    row.update(unavailable=str(e).split(";")[0])
                rows.append(row)

    clip = f"{args.num_frames}x{args.num_local_frames}"
    print(f"clips of T x M = {clip} frames, one worker (1 process, 1 decoding thread)")
    print(f"{'source':<44} {'backend':<11} {'work':<15} {'clips/s':>8} {'ms/clip':>8}")
    for r in rows:
        if "unavailable" in r:
            values = f"unavailable: {r['unavailable']}"
        else:
            values = f"{r['clips_per_s']:>8.1f} {r['ms_per_clip']:>8.1f}"
        print(f"{r['source']:<44} {r['backend']:<11} {r['work']:<15} {values}")
    machine = {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "av": av.__version__,
    }
    print(f"machine: {machine['cpu']}, {machine['cores']} cores")
    if args.json is not None:
        args.json.write_text(json.dumps({"machine": machine, "clip": clip, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
