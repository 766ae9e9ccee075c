"""Check that every entry of an annotation file can be read, before a long run finds out.

    python -m tdsclip.data.verify --format ssv2 --ann something-something-v2-validation.json \\
        --root 20bn-something-something-v2 --labels something-something-v2-labels.json \\
        --workers 8

Video files are decoded completely with PyAV (counting decodable frames) and a clip is read
through the selected backend, the way training reads it. Frame folders are checked for missing
frames (gaps, fewer files than the list claims) and every image is decoded.

Prints a table of problems to stdout and, as the last line,
`checked N videos: A readable, B unreadable, C missing`. Exit code 0 when every video is
readable, 1 otherwise. A frame count that differs from the container's claim is listed
(`count_mismatch`) but does not make a video unreadable: the loaders resample from the frames
that exist.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial

import av
from PIL import Image

from tdsclip.data.annotations import (
    AnnotationError,
    Annotations,
    VideoRecord,
    read_class_names,
    read_kinetics,
    read_rawframe_list,
    read_ssv1,
    read_ssv2,
    read_video_list,
)
from tdsclip.data.decoding import (
    BACKENDS,
    BackendUnavailableError,
    VideoReadError,
    backend_route,
    read_video_frames,
)
from tdsclip.data.sampling import val_centres

logger = logging.getLogger("tdsclip.data.verify")

FORMATS = ("ssv1", "ssv2", "k400", "videos", "rawframes")
UNREADABLE_KINDS = ("unreadable", "too_short", "frame_gap")


@dataclass(frozen=True)
class Problem:
    kind: str  # missing | unreadable | too_short | frame_gap | count_mismatch
    path: str
    detail: str


def _count_decodable(path: str) -> tuple[int, int]:
    """(packets, frames that PyAV decodes) for a video file; decoding errors end the count."""
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_count = 1
        packets = frames = 0
        try:
            for packet in container.demux(stream):
                packets += packet.size > 0
                frames += len(packet.decode())
        except av.FFmpegError as e:
            logger.debug("%s: decoding stopped after %d frames: %s", path, frames, e)
    return packets, frames


def check_video_file(path: str, backend: str) -> list[Problem]:
    if not os.path.isfile(path):
        return [Problem("missing", path, "file not found")]
    try:
        packets, frames = _count_decodable(path)
    except (av.FFmpegError, IndexError, OSError) as e:
        return [Problem("unreadable", path, f"pyav: {str(e).strip() or type(e).__name__}")]
    if frames < 1:
        return [Problem("too_short", path, f"no decodable frame ({packets} packets)")]
    try:
        read_video_frames(path, lambda n: val_centres(n, 8), backend=backend)
    except VideoReadError as e:
        return [Problem(e.kind, path, f"{'/'.join(backend_route(path, backend))}: {e.reason}")]
    if frames != packets:
        return [Problem("count_mismatch", path, f"{packets} packets but {frames} frames decode")]
    return []


def check_frame_folder(record: VideoRecord, image_tmpl: str) -> list[Problem]:
    path = record.path
    if not os.path.isdir(path):
        return [Problem("missing", path, "frame folder not found")]
    names = set(os.listdir(path))
    suffix = os.path.splitext(image_tmpl.format(1))[1]
    on_disk = sum(1 for n in names if n.endswith(suffix))
    claimed = record.num_frames if record.num_frames is not None else on_disk
    if claimed < 1:
        return [Problem("too_short", path, "no frame files")]
    absent = [i for i in range(1, claimed + 1) if image_tmpl.format(i) not in names]
    if absent:
        present_max = max(
            (i for i in range(1, claimed + 1) if image_tmpl.format(i) in names), default=0
        )
        gaps = [i for i in absent if i < present_max]
        if gaps:
            shown = ", ".join(image_tmpl.format(i) for i in gaps[:5])
            return [Problem("frame_gap", path, f"{len(gaps)} frames missing inside: {shown}")]
        return [Problem("too_short", path, f"{present_max} frame files, {claimed} claimed")]
    for i in range(1, claimed + 1):
        file = os.path.join(path, image_tmpl.format(i))
        try:
            with Image.open(file) as image:
                image.convert("RGB").load()
        except OSError as e:
            return [Problem("unreadable", path, f"{image_tmpl.format(i)}: {e}")]
    return []


def check_record(record: VideoRecord, *, backend: str, image_tmpl: str) -> list[Problem]:
    if record.kind == "frames":
        return check_frame_folder(record, image_tmpl)
    return check_video_file(record.path, backend)


def load_records(fmt: str, ann: str, root: str, labels: str | None) -> Annotations:
    if fmt in ("ssv1", "ssv2") and labels is None:
        raise AnnotationError(ann, None, f"--labels is required for --format {fmt}")
    if fmt == "ssv2":
        return read_ssv2(ann, str(labels), root, allow_unlabelled=True)
    if fmt == "ssv1":
        return read_ssv1(ann, str(labels), root)
    if fmt == "k400":
        return read_kinetics(ann, root, labels_file=labels, train_ann_file=ann)
    classes = read_class_names(labels) if labels is not None else None
    if fmt == "videos":
        return read_video_list(ann, root, classes)
    return read_rawframe_list(ann, root, classes)


def format_report(problems: list[Problem], num_checked: int) -> str:
    """The problem table followed by the summary line (always last)."""
    lines = []
    if problems:
        width = max(len(p.path) for p in problems)
        lines.append(f"{'problem':<14}  {'path':<{width}}  detail")
        lines.append(f"{'-' * 14}  {'-' * width}  {'-' * 6}")
        order = {k: i for i, k in enumerate(("missing", *UNREADABLE_KINDS, "count_mismatch"))}
        for p in sorted(problems, key=lambda p: (order[p.kind], p.path)):
            lines.append(f"{p.kind:<14}  {p.path:<{width}}  {p.detail}")
    else:
        lines.append("no problems found")
    missing = sum(p.kind == "missing" for p in problems)
    unreadable = sum(p.kind in UNREADABLE_KINDS for p in problems)
    readable = num_checked - missing - unreadable
    lines.append(
        f"checked {num_checked} videos: {readable} readable, {unreadable} unreadable, "
        f"{missing} missing"
    )
    return "\n".join(lines) + "\n"


def verify(
    records: Sequence[VideoRecord], *, backend: str, image_tmpl: str, workers: int
) -> list[Problem]:
    check = partial(check_record, backend=backend, image_tmpl=image_tmpl)
    if workers <= 1:
        results = [check(r) for r in records]
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            chunk = max(1, min(64, len(records) // (4 * workers)))
            results = list(pool.map(check, records, chunksize=chunk))
    return [p for found in results for p in found]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tdsclip.data.verify", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--format", required=True, choices=FORMATS)
    parser.add_argument("--ann", required=True, help="annotation file (json, csv or list)")
    parser.add_argument("--root", required=True, help="folder of the videos / frame folders")
    parser.add_argument("--labels", default=None, help="class names file where the format has one")
    parser.add_argument("--backend", default="auto", choices=BACKENDS)
    parser.add_argument("--image-tmpl", default="{:05d}.jpg", help="frame file names, 1-based")
    parser.add_argument("--workers", type=int, default=1, help="processes decoding in parallel")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    try:
        records = load_records(args.format, args.ann, args.root, args.labels).records
        logger.info(
            "checking %d entries of %s with %d worker(s)", len(records), args.ann, args.workers
        )
        problems = verify(
            records, backend=args.backend, image_tmpl=args.image_tmpl, workers=args.workers
        )
    except (AnnotationError, BackendUnavailableError) as e:
        parser.exit(2, f"error: {e}\n")
    sys.stdout.write(format_report(problems, len(records)))
    return 0 if all(p.kind == "count_mismatch" for p in problems) else 1


if __name__ == "__main__":
    raise SystemExit(main())
