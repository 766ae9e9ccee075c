"""Frame folders: numbered image files of one video, read with PIL.

Frame index i of a record is the file `image_tmpl.format(offset + i + 1)` (1-based file numbers,
mmaction2's `start_index=1`; `offset` comes from `with_offset` lists). When the configured
template names no file of a folder, the template is detected from the folder's file names
(`img_00001.jpg`, mmaction2's default, `00001.jpg`, SSv1's, `image_0001.png`, ...); a folder
whose names fit no numbered pattern is an error naming the template and a file found.
"""

from __future__ import annotations

import logging
import os
import re
from collections import Counter
from collections.abc import Iterable

import numpy as np
from PIL import Image

from tdsclip.data.decode_common import (
    FrameSampler,
    VideoReadError,
    first_line,
    gather_frames,
    sample_indices,
)

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
# Prefixes of RGB frames, most likely first: a folder written by mmaction2's denseflow also
# holds `flow_x_00001.jpg` and `flow_y_00001.jpg` beside `img_00001.jpg`.
_RGB_PREFIXES = ("img_", "", "image_", "frame_", "img", "image", "frame")
_NUMBERED = re.compile(r"(?P<prefix>.*?)(?P<digits>[0-9]+)(?P<ext>\.[A-Za-z0-9]+)")


def _pattern(name: str) -> tuple[str, int, str] | None:
    """(prefix, zero-padded width or 0, extension) of a numbered image file name."""
    match = _NUMBERED.fullmatch(name)
    if match is None or match["ext"].lower() not in IMAGE_EXTENSIONS:
        return None
    digits = match["digits"]
    width = len(digits) if digits.startswith("0") else 0
    return match["prefix"], width, match["ext"]


def detect_template(names: Iterable[str]) -> str | None:
    """The `str.format` template of the numbered image files among `names`, or None.

    Files of one template share prefix, zero padding and extension; the template with an RGB
    frame prefix (`img_`, none, `image_`, `frame_`) wins over others (flow files), then the
    one with the most files.
    """
    groups: Counter[tuple[str, str]] = Counter()
    widths: dict[tuple[str, str], set[int]] = {}
    for name in names:
        found = _pattern(name)
        if found is None:
            continue
        prefix, width, ext = found
        groups[prefix, ext] += 1
        widths.setdefault((prefix, ext), set()).add(width)
    if not groups:
        return None

    def rank(key: tuple[str, str]) -> tuple[int, int]:
        prefix = key[0]
        known = _RGB_PREFIXES.index(prefix) if prefix in _RGB_PREFIXES else len(_RGB_PREFIXES)
        return known, -groups[key]

    prefix, ext = min(groups, key=rank)
    padded = sorted(widths[prefix, ext] - {0})
    # "1.jpg ... 10.jpg" is unpadded; "00001.jpg" zero-pads to its width
    number = f"{{:0{padded[-1]}d}}" if padded else "{:d}"
    return prefix.replace("{", "{{").replace("}", "}}") + number + ext


def resolve_template(path: str, image_tmpl: str, first: int) -> str:
    """`image_tmpl` when it names file number `first` of the folder, else the detected one.

    Raises VideoReadError (missing folder, no image files, no file of any template).
    """
    if os.path.isfile(os.path.join(path, image_tmpl.format(first))):
        return image_tmpl
    try:
        names = sorted(os.listdir(path))
    except FileNotFoundError:
        raise VideoReadError(path, "missing", "frame folder not found") from None
    except NotADirectoryError:
        raise VideoReadError(path, "unreadable", "not a folder") from None
    if not names:
        raise VideoReadError(path, "too_short", "no frame files")
    detected = detect_template(names)
    if detected is not None and os.path.isfile(os.path.join(path, detected.format(first))):
        logger.debug("%s: frame files named %s, not %s", path, detected, image_tmpl)
        return detected
    example = next((n for n in names if _pattern(n) is not None), names[0])
    what = f"file {image_tmpl.format(first)} not found"
    if detected is not None:
        what += f" (nor {detected.format(first)}, by the files' own template {detected})"
    raise VideoReadError(path, "unreadable", f"{what}; image_tmpl is {image_tmpl}, e.g. {example}")


def count_frame_files(path: str, image_tmpl: str) -> int:
    """Number of files named `image_tmpl.format(i)` for i >= 1 in a folder."""
    names = set(os.listdir(path))
    return sum(image_tmpl.format(i) in names for i in range(1, len(names) + 1))


def _load_image(path: str, file: str) -> np.ndarray:
    try:
        with Image.open(file) as image:
            return np.asarray(image.convert("RGB"))  # (H, W, 3)
    except FileNotFoundError:
        raise VideoReadError(path, "unreadable", f"frame file {file} missing") from None
    except OSError as e:  # PIL raises OSError subclasses for truncated/corrupt images
        raise VideoReadError(path, "unreadable", f"{file}: {first_line(e)}") from e


def read_frame_folder(
    path: str,
    sampler: FrameSampler,
    *,
    image_tmpl: str,
    num_frames: int | None = None,
    offset: int = 0,
) -> np.ndarray:
    """Frames of a folder of numbered images: index i is file `offset + i + 1` of the template.

    num_frames: the count the annotation claims; None counts the files on disk.
    Returns uint8 (*indices.shape, H, W, 3).
    """
    if not os.path.isdir(path):
        raise VideoReadError(path, "missing", "frame folder not found")
    template = resolve_template(path, image_tmpl, offset + 1)
    count = count_frame_files(path, template) if num_frames is None else num_frames
    if count < 1:
        raise VideoReadError(path, "too_short", "no frame files")
    unique, inverse, shape = sample_indices(sampler, count)
    frames = [
        _load_image(path, os.path.join(path, template.format(offset + index + 1)))
        for index in unique.tolist()
    ]
    if len({f.shape for f in frames}) > 1:
        raise VideoReadError(path, "unreadable", "frames have different sizes")
    return gather_frames(path, np.stack(frames), inverse, shape)
