"""Read the frames a clip needs from a video file or a frame folder, one batched call per clip.

A reader gets a *frame sampler*: a pure function from the number of frames n to an int array of
frame indices of any shape (for example (C, T, M)). The reader finds n, asks the sampler for the
indices, decodes each distinct frame once and returns uint8 frames of shape
(*indices.shape, H, W, 3).

Backends for video files:
- decord: `VideoReader.get_batch` (keyframe seek + decode), one reader per clip, 1 thread.
- pyav: demux every packet (the packet count is the frame count; WebM headers carry none),
  then decode sequentially once up to the last needed frame, converting only needed frames.
- torchcodec: `VideoDecoder(seek_mode="exact").get_frames_at`; optional, needs FFmpeg 4-8 shared
  libraries on the system.
- auto: per container, the first backend of `AUTO_ROUTES` that reads the file; the next one is
  the fallback. The routes come from the decord-vs-PyAV comparison in
  tests/test_data_decoding.py (see docs/datasets.md).

When a file holds fewer decodable frames than its header or packet count claims, the sampler is
asked again with the true count, so the clip always comes from frames that exist.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Literal

# PyAV before decord: decord's wheel bundles an old libvpx whose symbols, when loaded first,
# shadow PyAV's and make PyAV's VP8/VP9 *encoders* fail to open (measured; decoding is fine).
import av
import numpy as np
from PIL import Image

logger = logging.getLogger(__name__)

FrameSampler = Callable[[int], np.ndarray]
ProblemKind = Literal["missing", "unreadable", "too_short"]

BACKENDS = ("auto", "decord", "pyav", "torchcodec")
# Container suffix -> backends tried in order under `backend: auto`. decord returned the same
# frames as a full PyAV decode for VP9 WebM and H.264 MP4 (tests/test_data_decoding.py), so it
# leads everywhere; PyAV is the fallback for files decord cannot open or decode.
AUTO_ROUTES: dict[str, tuple[str, ...]] = {
    ".webm": ("decord", "pyav"),
    ".mp4": ("decord", "pyav"),
}
_AUTO_DEFAULT_ROUTE = ("decord", "pyav")


class VideoReadError(RuntimeError):
    """A video or frame folder that cannot give a clip; `kind` says why (for reports)."""

    def __init__(self, path: str, kind: ProblemKind, reason: str) -> None:
        self.path = path
        self.kind: ProblemKind = kind
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class BackendUnavailableError(RuntimeError):
    """The selected decoding backend cannot run on this machine (a setup error, not bad data)."""


def _gather(
    path: str, frames: np.ndarray, inverse: np.ndarray, shape: tuple[int, ...]
) -> np.ndarray:
    """Expand the decoded distinct frames (K, H, W, 3) to (*shape, H, W, 3)."""
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise VideoReadError(path, "unreadable", f"decoder returned frames of shape {frames.shape}")
    return frames[inverse.reshape(-1)].reshape(*shape, *frames.shape[1:])


def _sample(
    sampler: FrameSampler, num_frames: int
) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    """Indices from the sampler as (sorted distinct indices, inverse map, original shape)."""
    indices = np.asarray(sampler(num_frames), dtype=np.int64)
    if indices.size == 0 or indices.min() < 0 or indices.max() >= num_frames:
        raise ValueError(f"sampler returned indices outside [0, {num_frames}): {indices}")
    unique, inverse = np.unique(indices, return_inverse=True)
    return unique, inverse, indices.shape


def _read_decord(path: str, sampler: FrameSampler) -> np.ndarray:
    try:
        import decord
    except ImportError as e:
        raise BackendUnavailableError(f"decord is not installed ({e}): pip install decord") from e
    # Errors are raised only after the reader is gone, without chaining decord's exception: its
    # traceback would keep the VideoReader alive, and a DataLoader worker forked while one is
    # alive deadlocks in the reader's destructor (its decoder thread does not exist there).
    kind: ProblemKind = "unreadable"
    error = None
    try:
        reader = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1)
    except Exception as e:  # decord raises bare DECORDError/RuntimeError from C++
        error = f"decord cannot open: {_first_line(e)}"
    if error is not None:
        raise VideoReadError(path, kind, error)
    try:
        # len() counts the packets indexed at open, not the (often absent) header count.
        count = len(reader)
        if count < 1:
            kind, error = "too_short", "no frames"
        else:
            unique, inverse, shape = _sample(sampler, count)
            try:
                frames = reader.get_batch(unique.tolist()).asnumpy()  # (K, H, W, 3)
            except Exception as e:
                error = f"decord: {_first_line(e)}"
    finally:
        del reader  # a fresh reader per clip: long-lived decord readers are reported to leak
    if error is not None:
        raise VideoReadError(path, kind, error)
    return _gather(path, frames, inverse, shape)


def _pyav_count_packets(path: str) -> int:
    with av.open(path) as container:
        if not container.streams.video:
            raise VideoReadError(path, "unreadable", "no video stream")
        stream = container.streams.video[0]
        return sum(1 for packet in container.demux(stream) if packet.size > 0)


def _pyav_decode(path: str, wanted: np.ndarray) -> tuple[dict[int, np.ndarray], int]:
    """Decode sequentially up to the last wanted index, keeping only wanted frames.

    Returns (index -> (H, W, 3) frame, number of frames decoded).
    """
    wanted_set = set(wanted.tolist())
    last = int(wanted[-1])
    kept: dict[int, np.ndarray] = {}
    decoded = 0
    try:
        with av.open(path) as container:
            stream = container.streams.video[0]
            stream.thread_count = 1  # parallelism comes from DataLoader workers
            for frame in container.decode(stream):
                if decoded in wanted_set:
                    kept[decoded] = frame.to_ndarray(format="rgb24")  # (H, W, 3)
                decoded += 1
                if decoded > last:
                    break
    except (av.FFmpegError, OSError) as e:
        # A corrupt packet ends the stream; the frames decoded before it stay usable.
        logger.debug("%s: decoding stopped after %d frames: %s", path, decoded, e)
    return kept, decoded


def _read_pyav(path: str, sampler: FrameSampler) -> np.ndarray:
    try:
        # WebM headers carry no frame count and their duration can overstate the stream, so
        # count packets (one per frame for VP9 superframes and H.264).
        count = _pyav_count_packets(path)
    except (av.FFmpegError, OSError) as e:
        raise VideoReadError(path, "unreadable", f"pyav cannot open: {_first_line(e)}") from e
    if count < 1:
        raise VideoReadError(path, "too_short", "no video packets")
    unique, inverse, shape = _sample(sampler, count)
    kept, decoded = _pyav_decode(path, unique)
    if decoded <= unique[-1]:
        # Fewer decodable frames than packets (truncated file, hidden frames): sample again
        # from the frames that exist.
        if decoded < 1:
            raise VideoReadError(path, "too_short", "no decodable frame")
        logger.debug("%s: %d packets but %d decodable frames", path, count, decoded)
        unique, inverse, shape = _sample(sampler, decoded)
        kept, _ = _pyav_decode(path, unique)
        if len(kept) < len(unique):
            raise VideoReadError(
                path, "unreadable", "decoding stops at a different frame each time"
            )
    frames = np.stack([kept[i] for i in unique.tolist()])  # (K, H, W, 3)
    return _gather(path, frames, inverse, shape)


def _read_torchcodec(path: str, sampler: FrameSampler) -> np.ndarray:
    try:
        from torchcodec.decoders import VideoDecoder
    except ImportError as e:
        raise BackendUnavailableError(
            f"torchcodec is not installed ({e}): pip install 'tdsclip[torchcodec]'"
        ) from e
    try:
        # exact mode scans the file: header frame counts of WebM files are often wrong.
        decoder = VideoDecoder(
            path, seek_mode="exact", dimension_order="NHWC", num_ffmpeg_threads=1
        )
    except Exception as e:  # torchcodec raises RuntimeError/ValueError from its C++ core
        if "Could not load libtorchcodec" in str(e):
            raise BackendUnavailableError(
                "torchcodec cannot load FFmpeg's shared libraries (it needs FFmpeg 4-8 installed "
                "system-wide, e.g. `apt-get install ffmpeg` or `conda install ffmpeg`); install "
                "them or set `backend` to auto, decord or pyav"
            ) from e
        raise VideoReadError(path, "unreadable", f"torchcodec: {_first_line(e)}") from e
    count = decoder.metadata.num_frames
    if not count:
        raise VideoReadError(path, "too_short", "no frames")
    unique, inverse, shape = _sample(sampler, count)
    try:
        frames = decoder.get_frames_at(unique.tolist()).data.numpy()  # (K, H, W, 3)
    except Exception as e:
        raise VideoReadError(path, "unreadable", f"torchcodec: {_first_line(e)}") from e
    return _gather(path, frames, inverse, shape)


_READERS: dict[str, Callable[[str, FrameSampler], np.ndarray]] = {
    "decord": _read_decord,
    "pyav": _read_pyav,
    "torchcodec": _read_torchcodec,
}


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"unknown decoding backend {backend!r}; choose one of {BACKENDS}")
    return backend


def backend_route(path: str, backend: str) -> tuple[str, ...]:
    """The backends tried, in order, for `path` under the given setting."""
    if check_backend(backend) != "auto":
        return (backend,)
    return AUTO_ROUTES.get(os.path.splitext(path)[1].lower(), _AUTO_DEFAULT_ROUTE)


def read_video_frames(path: str, sampler: FrameSampler, *, backend: str = "auto") -> np.ndarray:
    """Frames of a video file at `sampler(n)`: uint8 (*indices.shape, H, W, 3).

    Raises VideoReadError (missing / unreadable / too short) or BackendUnavailableError.
    """
    if not os.path.isfile(path):
        raise VideoReadError(path, "missing", "file not found")
    route = backend_route(path, backend)
    failures: list[tuple[str, VideoReadError]] = []
    for name in route:
        try:
            return _READERS[name](path, sampler)
        except VideoReadError as e:
            failures.append((name, e))
        except BackendUnavailableError:
            if len(route) == 1:
                raise
            logger.debug("backend %s unavailable, trying the next one", name)
    if not failures:
        raise BackendUnavailableError(f"none of the backends {route} is available")
    if len(failures) == 1:
        raise failures[0][1]
    short = all(e.kind == "too_short" for _, e in failures)
    reasons = "; ".join(f"{name}: {e.reason}" for name, e in failures)
    raise VideoReadError(path, "too_short" if short else "unreadable", reasons)


def count_frame_files(path: str, image_tmpl: str) -> int:
    """Number of files in a frame folder with the template's extension."""
    suffix = os.path.splitext(image_tmpl.format(1))[1]
    with os.scandir(path) as entries:
        return sum(1 for e in entries if e.name.endswith(suffix) and e.is_file())


def read_frame_folder(
    path: str, sampler: FrameSampler, *, image_tmpl: str, num_frames: int | None = None
) -> np.ndarray:
    """Frames of a folder of numbered images (`image_tmpl.format(i + 1)` for index i).

    num_frames: the count the annotation claims; None counts the files on disk.
    Returns uint8 (*indices.shape, H, W, 3).
    """
    if not os.path.isdir(path):
        raise VideoReadError(path, "missing", "frame folder not found")
    count = count_frame_files(path, image_tmpl) if num_frames is None else num_frames
    if count < 1:
        raise VideoReadError(path, "too_short", "no frame files")
    unique, inverse, shape = _sample(sampler, count)
    frames = []
    for index in unique.tolist():
        file = os.path.join(path, image_tmpl.format(index + 1))
        try:
            with Image.open(file) as image:
                frames.append(np.asarray(image.convert("RGB")))  # (H, W, 3)
        except FileNotFoundError:
            raise VideoReadError(path, "unreadable", f"frame file {file} missing") from None
        except OSError as e:  # PIL raises OSError subclasses for truncated/corrupt images
            raise VideoReadError(path, "unreadable", f"{file}: {_first_line(e)}") from e
    if len({f.shape for f in frames}) > 1:
        raise VideoReadError(path, "unreadable", "frames have different sizes")
    return _gather(path, np.stack(frames), inverse, shape)
