"""What every frame reader shares: errors, index bookkeeping, the probe of a video file.

The probe opens a file with PyAV (FFmpeg) once, before any backend reads it, and finds the one
video stream every backend must read: FFmpeg's best video stream (`av_find_best_stream`, the
stream `ffmpeg` and players pick), which decord and torchcodec also choose.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

# PyAV before decord: decord's wheel bundles an old libvpx whose symbols, when loaded first,
# shadow PyAV's and make PyAV's VP8/VP9 *encoders* fail to open (measured; decoding is fine).
import av
import numpy as np

from tdsclip.errors import UserError

FrameSampler = Callable[[int], np.ndarray]
ProblemKind = Literal["missing", "unreadable", "too_short"]


class VideoReadError(UserError, RuntimeError):
    """A video or frame folder that cannot give a clip; `kind` says why (for reports)."""

    def __init__(self, path: str, kind: ProblemKind, reason: str) -> None:
        self.path = path
        self.kind: ProblemKind = kind
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class BackendUnavailableError(UserError, RuntimeError):
    """The selected decoding backend cannot run on this machine (a setup error, not bad data)."""


def first_line(error: BaseException) -> str:
    """The first line of an exception's text (decoders append long C++ tracebacks)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def sample_indices(
    sampler: FrameSampler, num_frames: int
) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    """Indices from the sampler as (sorted distinct indices, inverse map, original shape)."""
    indices = np.asarray(sampler(num_frames), dtype=np.int64)
    if indices.size == 0 or indices.min() < 0 or indices.max() >= num_frames:
        raise ValueError(f"sampler returned indices outside [0, {num_frames}): {indices}")
    unique, inverse = np.unique(indices, return_inverse=True)
    return unique, inverse, indices.shape


def gather_frames(
    path: str, frames: np.ndarray, inverse: np.ndarray, shape: tuple[int, ...]
) -> np.ndarray:
    """Expand the decoded distinct frames (K, H, W, 3) to (*shape, H, W, 3)."""
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise VideoReadError(path, "unreadable", f"decoder returned frames of shape {frames.shape}")
    return frames[inverse.reshape(-1)].reshape(*shape, *frames.shape[1:])


def quarter_turns(rotation: float) -> int:
    """Counter-clockwise quarter turns (0-3) that show a frame the way a player does.

    `rotation` is FFmpeg's display-matrix angle (`av_display_rotation_get`, counter-clockwise
    degrees, what PyAV's `VideoFrame.rotation` returns).
    """
    return round(rotation / 90) % 4


def best_video_stream(container: av.container.InputContainer, path: str) -> av.VideoStream:
    """FFmpeg's best video stream of an open container; "no video stream" otherwise."""
    stream = container.streams.best("video")
    if stream is None:
        raise VideoReadError(path, "unreadable", "no video stream")
    return stream


@dataclass(frozen=True)
class VideoProbe:
    """The stream a file is read from, as FFmpeg's headers describe it (nothing decoded).

    stream_index: FFmpeg's best video stream; num_video_streams: how many there are.
    codec: FFmpeg's name of the codec ("h264", "hevc", "vp9", "mpeg4", "av1", ...).
    width, height: coded size, before rotation. pix_fmt: e.g. "yuv420p", "yuv420p10le".
    full_range: the stream says full-range ("pc"/"jpeg") YUV.
    has_b_frames: frames are stored out of display order (B-frames).
    """

    stream_index: int
    num_video_streams: int
    codec: str
    width: int
    height: int
    pix_fmt: str | None
    full_range: bool
    has_b_frames: bool

    @property
    def plain_8bit(self) -> bool:
        """8-bit 4:2:0 (limited range, or H.264's full-range yuvj420p): the sources that decord,
        PyAV, torchcodec and `ffmpeg -pix_fmt rgb24` convert to identical RGB (measured)."""
        if self.pix_fmt == "yuvj420p":
            return True
        return self.pix_fmt == "yuv420p" and not self.full_range


def probe_video(path: str) -> VideoProbe | None:
    """The probe of a video file; None when FFmpeg cannot open it (the backends then say why).

    Raises VideoReadError("no video stream") for a file that opens but holds no video (an audio
    file named .mp4): no backend could read it.
    """
    try:
        container = av.open(os.fspath(path))
    except (av.FFmpegError, OSError):
        return None
    with container:
        stream = best_video_stream(container, path)
        context = stream.codec_context
        return VideoProbe(
            stream_index=stream.index,
            num_video_streams=len(container.streams.video),
            codec=context.codec.canonical_name,
            width=context.width,
            height=context.height,
            pix_fmt=context.pix_fmt,
            full_range=context.color_range == 2,  # AVCOL_RANGE_JPEG
            has_b_frames=bool(context.has_b_frames),
        )
