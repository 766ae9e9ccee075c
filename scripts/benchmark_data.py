"""Data pipeline throughput: decoding per backend, and full training items per augment_on.

Writes its own test videos (VP9 WebM like SSv2, H.264 MP4 like Kinetics), then reads random
training clips (TSN sampling, M local frames around each centre) the way a DataLoader worker
does: one process, one decoding thread. Then times full training items of the SSv2 recipe (on
the WebM: resize [256, 320], crop, swap flip, RandAugment rand-m7-n4-mstd0.5-inc1) and the
Kinetics one (on the MP4: resize 256, crop, flip, grayscale 0.2), 2 augmented copies each, with
the augmentation in the worker (`--augment-on worker`, today's path) and on the device
(`device`: the CPU here, its time counted in), side by side on the same files. The rate is
views per second per CPU core: views / process CPU seconds.

    python scripts/benchmark_data.py --augment-on worker device --json benchmark.json
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
from tdsclip.data.loader import collate_train
from tdsclip.data.sampling import local_windows, train_centres
from tdsclip.data.synthetic import write_video
from tdsclip.data.transforms import VideoTrainTransform, flip_label_map
from tdsclip.engine.memory import keep_freed_memory

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


# The training recipes the item benchmark runs (configs/data/ssv2.yaml and k400.yaml).
RECIPES = {
    "ssv2": dict(
        container="webm",
        resize=(256, 320),
        flip="swap_lr",
        rand_augment="rand-m7-n4-mstd0.5-inc1",
        grayscale_p=0.0,
    ),
    "k400": dict(container="mp4", resize=256, flip="plain", rand_augment=None, grayscale_p=0.2),
}
CLASSES = ["Pushing something from left to right", "Pushing something from right to left"]


class CpuClock:
    """Wraps a callable and adds up the process CPU time spent inside it."""

    def __init__(self, fn):
        self.fn = fn
        self.seconds = 0.0

    def __call__(self, *args, **kwargs):
        start = time.process_time()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.seconds += time.process_time() - start


def train_dataset(path: str, recipe: dict, augment_on: str, *, num_frames: int, num_local: int):
    transform = VideoTrainTransform(
        input_size=224,
        resize=recipe["resize"],
        crop_scale=(0.08, 1.0),
        crop_ratio=(0.75, 4 / 3),
        flip=recipe["flip"],
        flip_pairs=flip_label_map(CLASSES),
        rand_augment=recipe["rand_augment"],
        grayscale_p=recipe["grayscale_p"],
    )
    return VideoTrainDataset(
        [VideoRecord(path, 0)],
        CLASSES,
        reader=ClipReader(backend="auto", image_tmpl="{:05d}.jpg"),
        transform=transform,
        num_frames=num_frames,
        num_local_frames=num_local,
        num_sample=2,
        augment_on=augment_on,
    )


def time_train_items(path: str, recipe: dict, augment_on: str, args) -> dict:
    """CPU cost of full training items (decode, resize, both copies' augmentation), in batches
    of `args.batch`; with augment_on=device the batch is augmented on the CPU as the device,
    its time counted in. Process CPU time: every thread of this process counts."""
    dataset = train_dataset(
        path, recipe, augment_on, num_frames=args.num_frames, num_local=args.num_local_frames
    )
    dataset.reader = reader = CpuClock(dataset.reader)
    dataset.transform.resize = resize = CpuClock(dataset.transform.resize)
    augment = CpuClock(dataset.device_augment)  # never called on the worker path: 0 s
    device = torch.device("cpu")
    epoch, cpu, wall = 0, 0.0, 0.0
    for batch_index in range(-1, -(-args.clips // args.batch)):  # batch -1: warm-up
        if batch_index == 0:
            reader.seconds = resize.seconds = augment.seconds = 0.0
        cpu0, wall0 = time.process_time(), time.perf_counter()
        items = []
        for _ in range(args.batch):
            items.append(dataset[(0, epoch)])
            epoch += 1
        batch = collate_train(items)
        if dataset.device_augment is not None:
            views = augment(batch["frames"], batch["params"], device)
            assert views.shape[:2] == (args.batch, 2)
        if batch_index >= 0:
            cpu += time.process_time() - cpu0
            wall += time.perf_counter() - wall0
    items = -(-args.clips // args.batch) * args.batch
    views = 2 * items
    return {
        "items": items,
        "views": views,
        "cpu_ms_per_item": 1000 * cpu / items,
        "wall_ms_per_item": 1000 * wall / items,
        "views_per_core_s": views / cpu,
        "decode_share": reader.seconds / cpu,
        "resize_share": resize.seconds / cpu,
        "device_share": augment.seconds / cpu,
        # What the data workers alone spend per view, i.e. with the device work on a GPU.
        "views_per_worker_core_s": views / (cpu - augment.seconds),
    }


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", nargs="+", default=["decord", "pyav", "torchcodec", "auto"])
    parser.add_argument("--clips", type=int, default=50, help="timed clips (items) per row")
    parser.add_argument("--num-frames", type=int, default=8, help="T segments")
    parser.add_argument("--num-local-frames", type=int, default=5, help="M local frames")
    parser.add_argument("--height", type=int, default=224)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--webm-fps", type=int, default=12, help="SSv2 videos are 12 fps")
    parser.add_argument("--mp4-fps", type=int, default=30, help="Kinetics videos: 25-30 fps")
    parser.add_argument(
        "--augment-on",
        nargs="+",
        choices=("worker", "device"),
        default=["worker", "device"],
        help="where the training items' augmentation runs (data.augment_on); both side by side",
    )
    parser.add_argument("--formats", nargs="+", choices=sorted(RECIPES), default=["ssv2", "k400"])
    parser.add_argument("--batch", type=int, default=8, help="items per device batch")
    parser.add_argument("--skip-train-items", action="store_true", help="decode timings only")
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    return parser.parse_args()


def decode_rows(path: Path, source: str, args: argparse.Namespace) -> list[dict]:
    rows = []
    for backend in args.backends:
        row = {"source": source, "backend": backend, "work": "decode"}
        try:
            seconds = time_clips(
                str(path),
                backend,
                clips=args.clips,
                num_frames=args.num_frames,
                num_local=args.num_local_frames,
            )
            row.update(clips_per_s=1.0 / seconds, ms_per_clip=1000.0 * seconds)
        except BackendUnavailableError as e:
            row.update(unavailable=str(e).split(";")[0])
        rows.append(row)
    return rows


def print_tables(rows: list[dict], items: list[dict], clip: str) -> None:
    print(f"clips of T x M = {clip} frames, one worker (1 process, 1 decoding thread)")
    print(f"{'source':<44} {'backend':<11} {'work':<15} {'clips/s':>8} {'ms/clip':>8}")
    for r in rows:
        if "unavailable" in r:
            values = f"unavailable: {r['unavailable']}"
        else:
            values = f"{r['clips_per_s']:>8.1f} {r['ms_per_clip']:>8.1f}"
        print(f"{r['source']:<44} {r['backend']:<11} {r['work']:<15} {values}")
    if not items:
        return
    print("\ntraining items (decode, resize, 2 augmented copies), CPU time of one process:")
    print(
        f"{'format':<7} {'augment_on':<10} {'views/core-s':>12} {'ms CPU/item':>11} "
        f"{'decode':>7} {'resize':>7} {'device':>7} {'views/worker-core-s':>19}"
    )
    for r in items:
        print(
            f"{r['format']:<7} {r['augment_on']:<10} {r['views_per_core_s']:>12.1f} "
            f"{r['cpu_ms_per_item']:>11.1f} {r['decode_share']:>7.0%} {r['resize_share']:>7.0%} "
            f"{r['device_share']:>7.0%} {r['views_per_worker_core_s']:>19.1f}"
        )
    rates = {(r["format"], r["augment_on"]): r["views_per_core_s"] for r in items}
    for fmt in dict.fromkeys(r["format"] for r in items):
        if (fmt, "worker") in rates and (fmt, "device") in rates:
            ratio = rates[(fmt, "device")] / rates[(fmt, "worker")]
            print(f"{fmt}: device / worker views per core = {ratio:.2f}x")


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)  # one DataLoader worker
    keep_freed_memory()  # as `python -m tdsclip.train` on the CPU (trainer.cpu_keep_freed_memory)
    rows, items, paths = [], [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for ext, codec in CONTAINERS.items():
            fps = args.webm_fps if ext == "webm" else args.mp4_fps
            path = Path(tmp) / f"source.{ext}"
            size = dict(height=args.height, width=args.width, seconds=args.seconds)
            n = make_source(path, codec=codec, fps=fps, **size)
            source = f"{ext} ({codec}, {args.width}x{args.height}, {fps} fps, {n} frames)"
            paths[ext] = (path, source)
            rows += decode_rows(path, source, args)
        for fmt in [] if args.skip_train_items else args.formats:
            path, source = paths[RECIPES[fmt]["container"]]
            for augment_on in args.augment_on:
                measured = time_train_items(str(path), RECIPES[fmt], augment_on, args)
                items.append({"format": fmt, "augment_on": augment_on, **measured})
                items[-1]["source"] = source
    clip = f"{args.num_frames}x{args.num_local_frames}"
    print_tables(rows, items, clip)
    machine = {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "av": av.__version__,
    }
    print(f"machine: {machine['cpu']}, {machine['cores']} cores")
    if args.json is not None:
        report = {"machine": machine, "clip": clip, "rows": rows, "items": items}
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
