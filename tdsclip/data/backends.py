"""The three video decoding backends, each returning the frames a player shows.

Every reader takes (path, sampler, probe) and returns uint8 (*indices.shape, H, W, 3) from
FFmpeg's best video stream with the rotation metadata applied, or raises VideoReadError with a
plain reason (no backend prefix: `decoding.read_video` adds it once).

- decord: `VideoReader.get_batch` (keyframe seek + decode), one reader per clip, 1 thread.
  decord applies the rotation itself but picks its stream by an older FFmpeg's rule and returns
  other frames than asked for from some files (`decord_is_exact`): it refuses those files.
- pyav: demux every packet of the stream (the packet count is the frame count; WebM headers
  carry none), then decode sequentially once up to the last needed frame, converting only the
  needed frames with FFmpeg's own filter-graph conversion (what `ffmpeg -pix_fmt rgb24` does)
  and turning them by the frame's display matrix.
- torchcodec: `VideoDecoder(seek_mode="exact").get_frames_at`, in order from frame 0 after a
  decoding error (damage); it refuses AVIs with B-frames, where its frame index is wrong
  (`torchcodec_is_exact`). Optional, needs FFmpeg 4-8 shared libraries on the system.
  torchcodec applies the rotation itself.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import numpy as np

from tdsclip.data.decode_common import (
    BackendUnavailableError,
    FrameSampler,
    ProblemKind,
    VideoProbe,
    VideoReadError,
    best_video_stream,
    first_line,
    gather_frames,
    quarter_turns,
    sample_indices,
)

logger = logging.getLogger(__name__)

Reader = Callable[[str, FrameSampler, "VideoProbe | None"], np.ndarray]
_TIME_BASE = Fraction(1, 1000)  # the filter graph needs one; the conversion ignores it


def _ffmpeg_reason(error: BaseException) -> str:
    """FFmpeg's own words for an error, without PyAV's errno and file name decoration."""
    return getattr(error, "strerror", None) or first_line(error)


# Measured against a sequential PyAV decode (tests/test_data_video_variants.py): decord
# returned other frames than asked for from HEVC and MPEG-4 Part 2 with B-frames (MP4, MKV,
# AVI) and from H.264 in AVI (with or without B-frames); H.264 elsewhere, VP8, VP9, MJPEG and
# HEVC / MPEG-4 without B-frames were exact.
DECORD_EXACT_CODECS = frozenset({"h264", "vp8", "vp9", "mjpeg"})
DECORD_EXACT_WITHOUT_B_FRAMES = frozenset({"hevc", "mpeg4"})
DECORD_EXACT_IN_AVI = frozenset({"mjpeg", "mpeg4"})


def decord_is_exact(path: str, probe: VideoProbe) -> bool:
    """Whether decord returns exactly the frames asked for from FFmpeg's best stream."""
    if probe.num_video_streams > 1:  # decord cannot be told which stream to read
        return False
    if path.lower().endswith(".avi") and probe.codec not in DECORD_EXACT_IN_AVI:
        return False
    if probe.codec in DECORD_EXACT_WITHOUT_B_FRAMES:
        return not probe.has_b_frames
    return probe.codec in DECORD_EXACT_CODECS


def _decord_refusal(path: str, probe: VideoProbe) -> str:
    if probe.num_video_streams > 1:
        return (
            f"cannot choose among {probe.num_video_streams} video streams (FFmpeg's best is "
            f"#{probe.stream_index}); use backend auto or pyav"
        )
    frames = " with B-frames" if probe.has_b_frames else ""
    return (
        f"returns other frames than asked for from {probe.codec}{frames} in this container "
        "(measured); use backend auto or pyav"
    )


def read_decord(path: str, sampler: FrameSampler, probe: VideoProbe | None) -> np.ndarray:
    try:
        import decord
    except ImportError as e:
        raise BackendUnavailableError(f"decord is not installed ({e}): pip install decord") from e
    # Errors are raised only after the reader is gone, without chaining decord's exception: its
    # traceback would keep the VideoReader alive, and a DataLoader worker forked while one is
    # alive deadlocks in the reader's destructor (its decoder thread does not exist there).
    if probe is not None and not decord_is_exact(path, probe):
        raise VideoReadError(path, "unreadable", _decord_refusal(path, probe))
    kind: ProblemKind = "unreadable"
    error = None
    try:
        reader = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1)
    except Exception as e:  # decord raises bare DECORDError/RuntimeError from C++
        error = f"cannot open: {_decord_reason(e)}"
    if error is not None:
        raise VideoReadError(path, kind, error)
    try:
        # len() counts the packets indexed at open, not the (often absent) header count.
        count = len(reader)
        if count < 1:
            kind, error = "too_short", "no frames"
        else:
            unique, inverse, shape = sample_indices(sampler, count)
            try:
                frames = reader.get_batch(unique.tolist()).asnumpy()  # (K, H, W, 3)
            except Exception as e:
                error = f"cannot decode frames {unique.min()}-{unique.max()}: {_decord_reason(e)}"
    finally:
        del reader  # a fresh reader per clip: long-lived decord readers are reported to leak
    if error is not None:
        raise VideoReadError(path, kind, error)
    return gather_frames(path, frames, inverse, shape)


_DECORD_LOG_PREFIX = re.compile(r"\[[0-9:]+\] \S+\.(?:cc|h):[0-9]+: ")


def _decord_reason(error: BaseException) -> str:
    """decord's message without the `[time] /path/to/source.cc:123:` prefixes of its C++ log
    and the failed check's expression."""
    text = _DECORD_LOG_PREFIX.sub("", first_line(error)).strip()
    if text.startswith("Check failed:") and ") " in text:
        text = text.rsplit(") ", 1)[1]  # "Check failed: f(x) >= 0 (-1094 vs. 0) what happened"
    return text or first_line(error)


def _pyav_count_packets(path: str) -> int:
    with av.open(path) as container:
        stream = best_video_stream(container, path)
        return sum(1 for packet in container.demux(stream) if packet.size > 0)


class _FfmpegRgb:
    """Frames to RGB the way FFmpeg itself converts them: through the `format=rgb24` filter
    graph that `ffmpeg -pix_fmt rgb24` builds, turned by the display matrix.

    PyAV's `to_ndarray(format="rgb24")` (one sws_scale_frame call) differs from FFmpeg at colour
    edges of 10-bit sources (mean 2.5 levels, max 80); this graph matched `ffmpeg` 5.1 and
    torchcodec exactly on 8- and 10-bit, limited- and full-range H.264 and HEVC (measured).
    """

    def __init__(self) -> None:
        self._graph: av.filter.Graph | None = None
        self._key: tuple[int, int, str] | None = None

    def _build(self, frame: av.VideoFrame) -> av.filter.Graph:
        graph = av.filter.Graph()
        if hasattr(graph, "threads"):  # PyAV versions that expose it
            # FFmpeg's default is a thread pool of one thread per CPU in every data worker; the
            # workers are the parallelism (swscale's slices give the same pixels either way).
            graph.threads = 1
        source = graph.add_buffer(
            width=frame.width, height=frame.height, format=frame.format, time_base=_TIME_BASE
        )
        convert = graph.add("format", "pix_fmts=rgb24")
        sink = graph.add("buffersink")
        source.link_to(convert)
        convert.link_to(sink)
        graph.configure()
        return graph

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        """(H, W, 3) uint8 as displayed (rotated frames are (W, H, 3))."""
        turns = quarter_turns(frame.rotation)
        key = (frame.width, frame.height, frame.format.name)
        if self._graph is None or key != self._key:  # a stream may change size mid-way
            self._graph, self._key = self._build(frame), key
        self._graph.push(frame)
        rgb = self._graph.pull().to_ndarray()  # (H, W, 3)
        return np.rot90(rgb, turns) if turns else rgb


def _pyav_decode(path: str, wanted: np.ndarray) -> tuple[dict[int, np.ndarray], int, str]:
    """Decode sequentially up to the last wanted index, keeping only wanted frames.

    Returns (index -> (H, W, 3) frame, number of frames decoded, why decoding stopped early).
    """
    wanted_set = set(wanted.tolist())
    last = int(wanted[-1])
    kept: dict[int, np.ndarray] = {}
    decoded = 0
    to_rgb = _FfmpegRgb()
    try:
        with av.open(path) as container:
            stream = best_video_stream(container, path)
            stream.thread_count = 1  # parallelism comes from DataLoader workers
            for frame in container.decode(stream):
                if decoded in wanted_set:
                    kept[decoded] = to_rgb(frame)
                decoded += 1
                if decoded > last:
                    break
    except (av.FFmpegError, OSError) as e:
        # A corrupt packet ends the stream; the frames decoded before it stay usable.
        return kept, decoded, f"cannot decode frame {decoded}: {_ffmpeg_reason(e)}"
    return kept, decoded, ""


def _read_sequentially(
    path: str,
    sampler: FrameSampler,
    count: int,
    decode: Callable[[np.ndarray], tuple[dict[int, np.ndarray], int, str]],
) -> np.ndarray:
    """The sampled frames from an in-order decode that may stop before `count` frames.

    `decode(wanted)` returns (index -> frame, frames decoded, why it stopped early). When
    fewer frames decode than were counted (truncated file, damage, hidden frames) the sampler
    is asked again with the number that decoded, so every frame returned exists.
    """
    unique, inverse, shape = sample_indices(sampler, count)
    kept, decoded, stop = decode(unique)
    if decoded <= unique[-1]:
        if decoded < 1:
            raise VideoReadError(path, "too_short", stop or "no decodable frame")
        logger.debug("%s: %d frames counted but %d decode (%s)", path, count, decoded, stop)
        unique, inverse, shape = sample_indices(sampler, decoded)
        kept, _, stop = decode(unique)
        if len(kept) < len(unique):
            raise VideoReadError(
                path, "unreadable", f"decoding stops at a different frame each time ({stop})"
            )
    frames = np.stack([kept[i] for i in unique.tolist()])  # (K, H, W, 3)
    return gather_frames(path, frames, inverse, shape)


def read_pyav(path: str, sampler: FrameSampler, probe: VideoProbe | None) -> np.ndarray:
    try:
        # WebM headers carry no frame count and their duration can overstate the stream, so
        # count packets (one per frame for VP9 superframes and H.264).
        count = _pyav_count_packets(path)
    except (av.FFmpegError, OSError) as e:
        raise VideoReadError(path, "unreadable", f"cannot open: {_ffmpeg_reason(e)}") from e
    if count < 1:
        raise VideoReadError(path, "too_short", "no video packets")
    return _read_sequentially(path, sampler, count, lambda wanted: _pyav_decode(path, wanted))


def _open_torchcodec(path: str, probe: VideoProbe | None) -> Any:  # a torchcodec VideoDecoder
    try:
        from torchcodec.decoders import VideoDecoder
    except ImportError as e:
        raise BackendUnavailableError(
            f"torchcodec is not installed ({e}): pip install 'tdsclip[torchcodec]'"
        ) from e
    try:
        # exact mode scans the file: header frame counts of WebM files are often wrong.
        return VideoDecoder(
            path,
            seek_mode="exact",
            dimension_order="NHWC",
            num_ffmpeg_threads=1,
            stream_index=None if probe is None else probe.stream_index,
        )
    except Exception as e:  # torchcodec raises RuntimeError/ValueError from its C++ core
        if "Could not load libtorchcodec" in str(e):
            raise BackendUnavailableError(
                "torchcodec cannot load FFmpeg's shared libraries (it needs FFmpeg 4-8 installed "
                "system-wide, e.g. `apt-get install ffmpeg` or `conda install ffmpeg`); install "
                "them or set `backend` to auto, decord or pyav"
            ) from e
        raise VideoReadError(path, "unreadable", f"cannot open: {_torchcodec_reason(e)}") from e


def _torchcodec_reason(error: BaseException) -> str:
    """torchcodec's message without its `function, /path/file.cpp:123,` prefix."""
    text = first_line(error)
    _, sep, tail = text.partition(".cpp:")
    return tail.split(",", 1)[-1].strip() if sep and "," in tail else text


def _torchcodec_in_order(
    path: str, probe: VideoProbe | None, wanted: np.ndarray
) -> tuple[dict[int, np.ndarray], int, str]:
    """Frames 0 .. wanted[-1] one after another from a fresh decoder: no seek."""
    decoder = _open_torchcodec(path, probe)
    wanted_set = set(wanted.tolist())
    kept: dict[int, np.ndarray] = {}
    for index in range(int(wanted[-1]) + 1):
        try:
            frame = decoder.get_frame_at(index).data.numpy()  # (H, W, 3)
        except Exception as e:
            return kept, index, f"cannot decode frame {index}: {_torchcodec_reason(e)}"
        if index in wanted_set:
            kept[index] = frame
    return kept, int(wanted[-1]) + 1, ""


def torchcodec_is_exact(path: str, probe: VideoProbe) -> bool:
    """Whether torchcodec's frame index is right for the file (measured): not for AVIs with
    B-frames, where it returned frame i-1 for i and could not decode the last frames."""
    return not (path.lower().endswith(".avi") and probe.has_b_frames)


def read_torchcodec(path: str, sampler: FrameSampler, probe: VideoProbe | None) -> np.ndarray:
    if probe is not None and not torchcodec_is_exact(path, probe):
        raise VideoReadError(
            path,
            "unreadable",
            f"returns other frames than asked for from {probe.codec} with B-frames in AVI "
            "(measured); use backend auto or pyav",
        )
    decoder = _open_torchcodec(path, probe)
    count = decoder.metadata.num_frames
    if not count:
        raise VideoReadError(path, "too_short", "no frames")
    unique, inverse, shape = sample_indices(sampler, count)
    try:
        frames = decoder.get_frames_at(unique.tolist()).data.numpy()  # (K, H, W, 3)
    except Exception as e:
        # Damage stops the batched read; decode in order up to it, as the pyav reader does.
        logger.debug("%s: torchcodec batch read failed (%s)", path, _torchcodec_reason(e))
        return _read_sequentially(
            path, sampler, count, lambda wanted: _torchcodec_in_order(path, probe, wanted)
        )
    return gather_frames(path, frames, inverse, shape)


READERS: dict[str, Reader] = {
    "decord": read_decord,
    "pyav": read_pyav,
    "torchcodec": read_torchcodec,
}


@dataclass(frozen=True)
class DecodeCount:
    """A full PyAV decode of the best video stream: packets, frames decoded before the first
    error, and that error ("cannot decode frame 12: ...", or "")."""

    packets: int
    frames: int
    error: str


def count_decodable_frames(path: str) -> DecodeCount:
    """Decode the whole best video stream with PyAV, as the pyav reader would.

    Raises VideoReadError when the file cannot be opened or holds no video stream.
    """
    try:
        container = av.open(path)
    except (av.FFmpegError, OSError) as e:
        raise VideoReadError(path, "unreadable", f"cannot open: {_ffmpeg_reason(e)}") from e
    packets = frames = 0
    error = ""
    with container:
        stream = best_video_stream(container, path)
        stream.thread_count = 1
        try:
            for packet in container.demux(stream):
                packets += packet.size > 0
                if not error:
                    try:
                        frames += len(packet.decode())
                    except av.FFmpegError as e:
                        # the readers stop here too: later frames are not counted as readable
                        error = f"cannot decode frame {frames}: {_ffmpeg_reason(e)}"
        except av.FFmpegError as e:
            error = error or f"cannot read packet {packets}: {_ffmpeg_reason(e)}"
    return DecodeCount(packets, frames, error)
