"""Readers for annotation files exactly as the public dataset releases ship them.

Every reader returns an :class:`Annotations`: the class names (index = label) and one
:class:`VideoRecord` per entry with an absolute path. Nothing is checked on disk here except
where the format requires it (Kinetics file names are found by indexing the root); missing or
broken videos surface when they are loaded, so one bad file never stops a run.

Any malformed line or unknown label raises :class:`AnnotationError`, which names the file and
the 1-based line number.
"""

from __future__ import annotations

import csv
import functools
import json
import logging
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tdsclip.errors import UserError

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v")
_K400_HEADER = ["label", "youtube_id", "time_start", "time_end", "split"]


class AnnotationError(UserError, ValueError):
    """A malformed annotation or labels file, pointing at the offending line."""

    def __init__(self, file: str | os.PathLike[str], line: int | None, message: str) -> None:
        self.file = str(file)
        self.line = line
        where = f"{self.file}:{line}" if line is not None else self.file
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class VideoRecord:
    """One annotated video.

    path: absolute path of a video file or a frame folder.
    label: class index; -1 for unlabelled test entries.
    kind: "video" for a video file, "frames" for a folder of numbered images.
    num_frames: for frame folders, the count the annotation claims (None: count on disk).
    offset: for frame folders, the number of frames skipped before frame index 0 (mmaction2's
        `with_offset` lists: clips cut from a longer folder).
    """

    path: str
    label: int
    kind: Literal["video", "frames"] = "video"
    num_frames: int | None = None
    offset: int = 0


@dataclass(frozen=True)
class Annotations:
    records: list[VideoRecord]
    classes: list[str]


def _read_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 text file; a byte order mark (Windows editors write one) is dropped."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise AnnotationError(path, None, "file not found") from None
    try:
        return data.decode("utf-8-sig").splitlines()
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise AnnotationError(
            path,
            line,
            f"not UTF-8 text: byte 0x{data[e.start]:02x} at byte {column} of the line "
            "(save the file as UTF-8)",
        ) from None


def _entries(path: Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, stripped line) for every non-blank line; errors if there is none."""
    found = False
    for number, raw in enumerate(_read_lines(path), start=1):
        line = raw.strip()
        if line:
            found = True
            yield number, line
    if not found:
        raise AnnotationError(path, None, "no entries")


def _parse_int(text: str, file: Path, line: int, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise AnnotationError(file, line, f"{what} must be an integer, got {text!r}") from None


def _check_label(label: int, num_classes: int, file: Path, line: int) -> int:
    if not 0 <= label < num_classes:
        limit = f"in [0, {num_classes})" if num_classes < sys.maxsize else ">= 0"
        raise AnnotationError(file, line, f"label {label} must be {limit}")
    return label


def read_class_names(path: str | os.PathLike[str]) -> list[str]:
    """Class names, one per line, index = 0-based line number.

    Also accepts the `id,name` CSV used by the TDS-CLIP/ActionCLIP lists (header `id,name`,
    then `<index>,<name>` rows in order).
    """
    file = Path(path)
    lines = _read_lines(file)
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise AnnotationError(file, None, "no class names")
    names: list[str] = []
    if lines[0].strip() == "id,name":
        for number, row in enumerate(csv.reader(lines[1:]), start=2):
            if len(row) != 2:
                raise AnnotationError(file, number, "expected `<index>,<name>`")
            index = _parse_int(row[0], file, number, "class index")
            if index != len(names):
                raise AnnotationError(file, number, f"class index {index}, expected {len(names)}")
            names.append(row[1].strip())
    else:
        for number, raw in enumerate(lines, start=1):
            name = raw.strip()
            if not name:
                raise AnnotationError(file, number, "blank line inside the class list")
            names.append(name)
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise AnnotationError(file, None, f"duplicate class names: {duplicates[:5]}")
    return names


def _iter_json_array(file: Path) -> Iterator[tuple[int, object]]:
    """(1-based line number, element) for every element of a top-level JSON array.

    Decoding element by element keeps the line number of each entry for error messages.
    """
    text = "\n".join(_read_lines(file))
    decoder = json.JSONDecoder()

    def line_of(pos: int) -> int:
        return text.count("\n", 0, pos) + 1

    def skip_ws(pos: int) -> int:
        while pos < len(text) and text[pos] in " \t\r\n":
            pos += 1
        return pos

    pos = skip_ws(0)
    if pos >= len(text) or text[pos] != "[":
        raise AnnotationError(file, line_of(pos), "expected a JSON array")
    pos = skip_ws(pos + 1)
    if pos < len(text) and text[pos] == "]":
        return
    while True:
        try:
            element, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            raise AnnotationError(file, e.lineno, f"invalid JSON: {e.msg}") from None
        yield line_of(pos), element
        pos = skip_ws(end)
        if pos < len(text) and text[pos] == ",":
            pos = skip_ws(pos + 1)
        elif pos < len(text) and text[pos] == "]":
            return
        else:
            raise AnnotationError(file, line_of(pos), "expected `,` or `]` in the JSON array")


def ssv2_class_name(template: str) -> str:
    """`"Putting [something] on [something]"` -> `"Putting something on something"`."""
    return template.replace("[", "").replace("]", "")


def read_ssv2(
    ann_file: str | os.PathLike[str],
    labels_file: str | os.PathLike[str],
    root: str | os.PathLike[str],
    *,
    allow_unlabelled: bool,
) -> Annotations:
    """Something-Something v2: `something-something-v2-{train,validation,test}.json`.

    Entries `{"id", "template", ...}`; the class is the template without square brackets,
    looked up in `something-something-v2-labels.json` (name -> index as a string). Videos are
    `<root>/<id>.webm`. Entries without a template (the test file) get label -1, which is only
    accepted when `allow_unlabelled` is set.
    """
    ann, labels_path = Path(ann_file), Path(labels_file)
    try:
        label_map = json.loads("\n".join(_read_lines(labels_path)))
    except json.JSONDecodeError as e:
        raise AnnotationError(labels_path, e.lineno, f"invalid JSON: {e.msg}") from None
    if not isinstance(label_map, dict) or not label_map:
        raise AnnotationError(labels_path, None, "expected a JSON object {class name: index}")
    try:
        index_of = {str(name): int(index) for name, index in label_map.items()}
    except (TypeError, ValueError):
        raise AnnotationError(labels_path, None, "class indices must be integers") from None
    if sorted(index_of.values()) != list(range(len(index_of))):
        raise AnnotationError(labels_path, None, f"indices are not 0..{len(index_of) - 1}")
    classes = sorted(index_of, key=index_of.__getitem__)

    records = []
    for line, entry in _iter_json_array(ann):
        if not isinstance(entry, dict) or "id" not in entry:
            raise AnnotationError(ann, line, 'expected an object with an "id"')
        if "template" in entry:
            name = ssv2_class_name(str(entry["template"]))
            if name not in index_of:
                raise AnnotationError(ann, line, f"unknown class {name!r} (not in {labels_path})")
            label = index_of[name]
        elif allow_unlabelled:
            label = -1
        else:
            raise AnnotationError(ann, line, 'no "template" (unlabelled entries: test split only)')
        records.append(VideoRecord(os.path.join(root, f"{entry['id']}.webm"), label))
    if not records:
        raise AnnotationError(ann, None, "no entries")
    return Annotations(records, classes)


def read_ssv1(
    ann_file: str | os.PathLike[str],
    labels_file: str | os.PathLike[str],
    root: str | os.PathLike[str],
) -> Annotations:
    """Something-Something v1: `<id>;<class name>` lines, frame folders `<root>/<id>/00001.jpg`.

    The class list is `something-something-v1-labels.csv`, one name per line.
    """
    ann = Path(ann_file)
    classes = read_class_names(labels_file)
    index_of = {name: i for i, name in enumerate(classes)}
    records = []
    for line, text in _entries(ann):
        video_id, sep, name = text.partition(";")
        if not sep or not video_id.strip() or not name.strip():
            raise AnnotationError(ann, line, "expected `<id>;<class name>`")
        if name.strip() not in index_of:
            raise AnnotationError(ann, line, f"unknown class {name.strip()!r}")
        path = os.path.join(root, video_id.strip())
        records.append(VideoRecord(path, index_of[name.strip()], kind="frames"))
    return Annotations(records, classes)


@functools.cache
def index_video_files(root: str) -> dict[str, str]:
    """Map file stem -> path for every video file anywhere under `root` (walked once per root)."""
    found: dict[str, str] = {}
    duplicates = 0
    for directory, subdirs, files in os.walk(root, followlinks=True):
        subdirs.sort()
        for name in sorted(files):
            stem, ext = os.path.splitext(name)
            if ext.lower() not in VIDEO_EXTENSIONS:
                continue
            if stem in found:
                duplicates += 1
                continue
            found[stem] = os.path.join(directory, name)
    if duplicates:
        logger.warning(
            "%s: %d video files share a name with another; kept the first", root, duplicates
        )
    return found


def kinetics_file_stem(youtube_id: str, time_start: int, time_end: int) -> str:
    """Kinetics clip file name without extension: `<youtube_id>_<start:06d>_<end:06d>`."""
    return f"{youtube_id}_{time_start:06d}_{time_end:06d}"


def _read_kinetics_csv(file: Path) -> Iterator[tuple[int, str, str]]:
    """(line, label, file stem) for every row of a Kinetics CSV."""
    rows = csv.reader(_read_lines(file))
    header = next(rows, None)
    if header is None or [h.strip() for h in header[:5]] != _K400_HEADER:
        raise AnnotationError(file, 1, f"expected the header `{','.join(_K400_HEADER)}`")
    found = False
    for line, row in enumerate(rows, start=2):
        if not row or not "".join(row).strip():
            continue
        if len(row) < 4:
            raise AnnotationError(
                file, line, f"expected {len(_K400_HEADER)} columns, got {len(row)}"
            )
        label, youtube_id = row[0].strip(), row[1].strip()
        start = _parse_int(row[2].strip(), file, line, "time_start")
        end = _parse_int(row[3].strip(), file, line, "time_end")
        if not youtube_id:
            raise AnnotationError(file, line, "empty youtube_id")
        found = True
        yield line, label, kinetics_file_stem(youtube_id, start, end)
    if not found:
        raise AnnotationError(file, None, "no entries")


def read_kinetics(
    ann_file: str | os.PathLike[str],
    root: str | os.PathLike[str],
    *,
    labels_file: str | os.PathLike[str] | None,
    train_ann_file: str | os.PathLike[str],
) -> Annotations:
    """Kinetics-400 CSV (`label,youtube_id,time_start,time_end,split`).

    Video files `<youtube_id>_<start:06d>_<end:06d>.<ext>` may sit anywhere under `root`. The
    class order comes from `labels_file` when given, else from the sorted label names of the
    train CSV (so train, val and test agree). Entries whose file is not under `root` keep the
    path where it was expected and count as missing when loaded.
    """
    ann = Path(ann_file)
    if labels_file is not None:
        classes = read_class_names(labels_file)
    else:
        classes = sorted({label for _, label, _ in _read_kinetics_csv(Path(train_ann_file))})
    index_of = {name: i for i, name in enumerate(classes)}
    files = index_video_files(os.path.abspath(root))
    records, missing = [], 0
    for line, label, stem in _read_kinetics_csv(ann):
        if label not in index_of:
            raise AnnotationError(ann, line, f"unknown class {label!r}")
        path = files.get(stem)
        if path is None:
            missing += 1
            path = os.path.join(root, f"{stem}.mp4")
        records.append(VideoRecord(path, index_of[label]))
    if missing:
        logger.warning(
            "%s: %d of %d videos not found under %s (they count as missing when loaded)",
            ann,
            missing,
            len(records),
            root,
        )
    return Annotations(records, classes)


def _with_classes(ann: Path, records: list[VideoRecord], classes: list[str] | None) -> Annotations:
    """Range-check labels against `classes`; None names the classes "0".."max label"."""
    if classes is None:
        return Annotations(records, [str(i) for i in range(max(r.label for r in records) + 1)])
    return Annotations(records, classes)


def _trailing_integers(text: str) -> tuple[str, list[str]]:
    """Split a list line into (path, the integer fields after it).

    The path is the first field plus every field up to the trailing run of integers, so paths
    may contain spaces (`my clip.mp4 3`); the first field is always part of the path (frame
    folders named by a number, `1234 45 3`).
    """
    fields = text.split()
    count = 0
    for field in reversed(fields[1:]):
        if not _is_int(field):
            break
        count += 1
    if count == 0:
        return text, []
    head = text.rsplit(maxsplit=count)
    return head[0], head[1:]


def _is_int(text: str) -> bool:
    return re.fullmatch(r"[+-]?[0-9]+", text) is not None


def _multi_label_message(labels: list[str]) -> str:
    return (
        f"{len(labels)} labels ({' '.join(labels)}): multi-label lines (mmaction2's "
        "multi_class=True) are not supported, training is single-label; keep one label per "
        "line (one line per label, or the primary label only)"
    )


def _split_columns(
    ann: Path, line: int, text: str, names: tuple[str, ...]
) -> tuple[str, list[int]]:
    """(path, integer columns `names[1:]`) of a list line; `names[0]` names the path column.

    Anything that does not fit is an error naming the line, never a path with spaces in it.
    """
    path, numbers = _trailing_integers(text)
    usage = f"expected `{' '.join(f'<{n}>' for n in names)}`"
    names = names[1:]
    if len(numbers) < len(names):
        fields = text.split()
        if len(fields) <= len(names):
            raise AnnotationError(ann, line, usage)
        name = names[len(names) - len(numbers) - 1]
        bad = fields[-len(numbers) - 1]
        raise AnnotationError(ann, line, f"{name} must be an integer, got {bad!r}")
    if len(numbers) > len(names):
        hint = ""
        if names == ("number of frames", "label") and len(numbers) == 3:
            hint = (
                "; if the second column is the clip's start frame, set with_offset: true "
                "(mmaction2's with_offset)"
            )
        extra = numbers[len(names) - 1 :]
        raise AnnotationError(
            ann,
            line,
            f"{len(numbers) + 1} columns, {usage}{hint}; or {_multi_label_message(extra)}",
        )
    return path, [int(n) for n in numbers]


def read_video_list(
    ann_file: str | os.PathLike[str], root: str | os.PathLike[str], classes: list[str] | None
) -> Annotations:
    """mmaction2 VideoDataset / TDS-CLIP video list: `<video path> <label>` per line.

    Paths are relative to `root` and may contain spaces. A line with several labels
    (mmaction2's `multi_class`) is an error. Labels must index `classes`; with classes=None any
    label >= 0 is accepted.
    """
    ann = Path(ann_file)
    limit = len(classes) if classes is not None else sys.maxsize
    records = []
    for line, text in _entries(ann):
        path, (label,) = _split_columns(ann, line, text, ("video path", "label"))
        records.append(VideoRecord(os.path.join(root, path), _check_label(label, limit, ann, line)))
    return _with_classes(ann, records, classes)


def read_rawframe_list(
    ann_file: str | os.PathLike[str],
    root: str | os.PathLike[str],
    classes: list[str] | None,
    *,
    with_offset: bool = False,
) -> Annotations:
    """mmaction2 RawframeDataset list: `<frame dir> <number of frames> <label>` per line.

    with_offset (mmaction2's name): lines are `<frame dir> <offset> <number of frames> <label>`, the
    clip's frame i being file `offset + i + 1` of the folder. Multi-label lines are errors.
    Labels must index `classes`; with classes=None any label >= 0 is accepted.
    """
    ann = Path(ann_file)
    limit = len(classes) if classes is not None else sys.maxsize
    names = ("frame dir", "offset", "number of frames", "label")
    if not with_offset:
        names = ("frame dir", "number of frames", "label")
    records = []
    for line, text in _entries(ann):
        path, numbers = _split_columns(ann, line, text, names)
        offset = numbers[0] if with_offset else 0
        total, label = numbers[-2:]
        if offset < 0:
            raise AnnotationError(ann, line, f"offset must be >= 0, got {offset}")
        if total < 1:
            raise AnnotationError(ann, line, f"number of frames must be >= 1, got {total}")
        record = VideoRecord(
            os.path.join(root, path),
            _check_label(label, limit, ann, line),
            kind="frames",
            num_frames=total,
            offset=offset,
        )
        records.append(record)
    return _with_classes(ann, records, classes)
