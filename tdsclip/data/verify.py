"""Check that every entry of an annotation file can be read, before a long run finds out.

    python -m tdsclip.data.verify --format ssv2 --ann something-something-v2-validation.json \\
        --root 20bn-something-something-v2 --labels something-something-v2-labels.json \\
        --workers 8 --json report.json

Video files are decoded completely with PyAV from FFmpeg's best video stream (counting
decodable frames) and a clip is read through the selected backend, the way training reads it.
Frame folders are checked for missing frames (gaps, fewer files than the list claims) and every
image is decoded. Labels are range-checked against `--labels` or `--num-classes`.

Prints a table of problems to stdout and, as the last line,
`checked N videos: A readable, B unreadable, C missing`. Exit code 0 when every video is
readable, 1 otherwise, 2 for a malformed annotation file. A frame count that differs from the
container's claim is listed (`count_mismatch`) but does not make a video unreadable: the loaders
resample from the frames that exist. `--json OUT` writes one record per entry (path, status,
frames, height, width as training sees them, detail).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from functools import partial

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
    count_decodable_frames,
    read_video,
)
from tdsclip.data.frame_folders import count_frame_files, resolve_template
from tdsclip.data.sampling import val_centres

logger = logging.getLogger("tdsclip.data.verify")

FORMATS = ("ssv1", "ssv2", "k400", "videos", "rawframes")
READABLE = ("readable", "count_mismatch")
UNREADABLE_KINDS = ("unreadable", "too_short", "frame_gap")
STATUSES = (*READABLE, "missing", *UNREADABLE_KINDS)


@dataclass(frozen=True)
class EntryReport:
    """What verify found for one entry; frames, height and width as training will see them
    (after rotation), None where unknown."""

    path: str
    status: str  # one of STATUSES
    frames: int | None
    height: int | None
    width: int | None
    detail: str


def _failed(path: str, status: str, detail: str, frames: int | None = None) -> EntryReport:
    return EntryReport(path, status, frames, None, None, detail)


def check_video_file(path: str, backend: str) -> EntryReport:
    if not os.path.isfile(path):
        return _failed(path, "missing", "file not found")
    try:
        count = count_decodable_frames(path)
    except VideoReadError as e:
        return _failed(path, e.kind, e.reason)
    if count.frames < 1:
        stop = f": {count.error}" if count.error else ""
        return _failed(path, "too_short", f"no decodable frame ({count.packets} packets){stop}")
    try:
        clip = read_video(path, lambda n: val_centres(n, 8), backend=backend)
    except VideoReadError as e:
        return _failed(path, e.kind, e.reason, count.frames)
    notes = []
    status = "readable"
    if count.frames != count.packets:
        status = "count_mismatch"
        notes.append(f"{count.packets} packets but {count.frames} frames decode ({count.error})")
    if clip.failures:
        notes.append(f"read by {clip.backend} after {'; '.join(clip.failures)}")
    height, width = clip.frames.shape[-3:-1]
    return EntryReport(path, status, count.frames, int(height), int(width), "; ".join(notes))


def _frame_range_problem(
    path: str, names: set[str], template: str, first: int, claimed: int
) -> EntryReport | None:
    """frame_gap / too_short when files first .. first + claimed - 1 are not all there."""
    numbers = range(first, first + claimed)
    present = [i for i in numbers if template.format(i) in names]
    if len(present) == claimed:
        return None
    last = max(present, default=first - 1)
    gaps = [i for i in numbers if i < last and template.format(i) not in names]
    if gaps:
        shown = ", ".join(template.format(i) for i in gaps[:5])
        return _failed(path, "frame_gap", f"{len(gaps)} frames missing inside: {shown}")
    start = f" from {template.format(first)}" if first > 1 else ""
    return _failed(path, "too_short", f"{last - first + 1} frame files{start}, {claimed} claimed")


def check_frame_folder(record: VideoRecord, image_tmpl: str) -> EntryReport:
    path = record.path
    if not os.path.isdir(path):
        return _failed(path, "missing", "frame folder not found")
    first = record.offset + 1
    try:
        template = resolve_template(path, image_tmpl, first)
    except VideoReadError as e:
        return _failed(path, e.kind, e.reason)
    claimed = record.num_frames
    if claimed is None:
        claimed = count_frame_files(path, template)
    problem = _frame_range_problem(path, set(os.listdir(path)), template, first, claimed)
    if problem is not None:
        return problem
    sizes = set()
    for i in range(first, first + claimed):
        try:
            with Image.open(os.path.join(path, template.format(i))) as image:
                sizes.add(image.convert("RGB").size)
        except OSError as e:
            return _failed(path, "unreadable", f"{template.format(i)}: {e}", claimed)
    if len(sizes) > 1:
        return _failed(path, "unreadable", f"frames have different sizes: {sorted(sizes)}", claimed)
    ((width, height),) = sizes
    detail = f"files named {template} (image_tmpl {image_tmpl} names none)"
    return EntryReport(
        path, "readable", claimed, height, width, detail if template != image_tmpl else ""
    )


def check_record(record: VideoRecord, *, backend: str, image_tmpl: str) -> EntryReport:
    if record.kind == "frames":
        return check_frame_folder(record, image_tmpl)
    return check_video_file(record.path, backend)


def _class_list(labels: str | None, num_classes: int | None) -> list[str] | None:
    """Classes of a generic list: from --labels, else "0".."N-1" for --num-classes N."""
    if labels is None:
        if num_classes is None:
            logger.warning("labels are not range-checked: pass --num-classes N (or --labels FILE)")
            return None
        return [str(i) for i in range(num_classes)]
    return read_class_names(labels)


def load_records(
    fmt: str,
    ann: str,
    root: str,
    labels: str | None,
    *,
    num_classes: int | None = None,
    with_offset: bool = False,
) -> Annotations:
    """The entries of an annotation file, labels range-checked where classes are known."""
    if fmt in ("ssv1", "ssv2") and labels is None:
        raise AnnotationError(ann, None, f"--labels is required for --format {fmt}")
    if with_offset and fmt != "rawframes":
        raise AnnotationError(ann, None, "--with-offset applies to --format rawframes only")
    if fmt == "ssv2":
        out = read_ssv2(ann, str(labels), root, allow_unlabelled=True)
    elif fmt == "ssv1":
        out = read_ssv1(ann, str(labels), root)
    elif fmt == "k400":
        out = read_kinetics(ann, root, labels_file=labels, train_ann_file=ann)
    elif fmt == "videos":
        out = read_video_list(ann, root, _class_list(labels, num_classes))
    else:
        classes = _class_list(labels, num_classes)
        out = read_rawframe_list(ann, root, classes, with_offset=with_offset)
    if num_classes is not None and len(out.classes) != num_classes:
        source = labels if labels is not None else ann
        raise AnnotationError(
            source, None, f"{len(out.classes)} classes, but --num-classes is {num_classes}"
        )
    return out


def format_report(reports: Sequence[EntryReport]) -> str:
    """The problem table followed by the summary line (always last)."""
    problems = [r for r in reports if r.status != "readable"]
    lines = []
    if problems:
        width = max(len(p.path) for p in problems)
        lines.append(f"{'problem':<14}  {'path':<{width}}  detail")
        lines.append(f"{'-' * 14}  {'-' * width}  {'-' * 6}")
        order = {k: i for i, k in enumerate(("missing", *UNREADABLE_KINDS, "count_mismatch"))}
        for p in sorted(problems, key=lambda p: (order[p.status], p.path)):
            lines.append(f"{p.status:<14}  {p.path:<{width}}  {p.detail}")
    else:
        lines.append("no problems found")
    missing = sum(r.status == "missing" for r in reports)
    unreadable = sum(r.status in UNREADABLE_KINDS for r in reports)
    readable = len(reports) - missing - unreadable
    lines.append(
        f"checked {len(reports)} videos: {readable} readable, {unreadable} unreadable, "
        f"{missing} missing"
    )
    return "\n".join(lines) + "\n"


def write_json(reports: Sequence[EntryReport], path: str) -> None:
    """One JSON object per entry, in the order of the annotation file."""
    with open(path, "w", encoding="utf-8") as f:
        json.dump([asdict(r) for r in reports], f, indent=1)
        f.write("\n")


def verify(
    records: Sequence[VideoRecord], *, backend: str, image_tmpl: str, workers: int
) -> list[EntryReport]:
    """One report per record, in order."""
    check = partial(check_record, backend=backend, image_tmpl=image_tmpl)
    if workers <= 1:
        return [check(r) for r in records]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        chunk = max(1, min(64, len(records) // (4 * workers)))
        return list(pool.map(check, records, chunksize=chunk))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tdsclip.data.verify", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--format", required=True, choices=FORMATS)
    parser.add_argument("--ann", required=True, help="annotation file (json, csv or list)")
    parser.add_argument("--root", required=True, help="folder of the videos / frame folders")
    parser.add_argument("--labels", default=None, help="class names file where the format has one")
    parser.add_argument("--num-classes", type=int, default=None, help="check labels are in [0, N)")
    parser.add_argument("--backend", default="auto", choices=BACKENDS)
    parser.add_argument("--image-tmpl", default="{:05d}.jpg", help="frame file names, 1-based")
    parser.add_argument(
        "--with-offset",
        action="store_true",
        help="rawframes lines are `<dir> <offset> <frames> <label>` (mmaction2 with_offset)",
    )
    parser.add_argument("--workers", type=int, default=1, help="processes decoding in parallel")
    parser.add_argument("--json", default=None, metavar="OUT", help="write one record per entry")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    try:
        records = load_records(
            args.format,
            args.ann,
            args.root,
            args.labels,
            num_classes=args.num_classes,
            with_offset=args.with_offset,
        ).records
        logger.info(
            "checking %d entries of %s with %d worker(s)", len(records), args.ann, args.workers
        )
        reports = verify(
            records, backend=args.backend, image_tmpl=args.image_tmpl, workers=args.workers
        )
    except (AnnotationError, BackendUnavailableError) as e:
        parser.exit(2, f"error: {e}\n")
    if args.json is not None:
        write_json(reports, args.json)
    sys.stdout.write(format_report(reports))
    return 0 if all(r.status in READABLE for r in reports) else 1


if __name__ == "__main__":
    raise SystemExit(main())
