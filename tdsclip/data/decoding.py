"""Read the frames a clip needs from a video file, one batched call per clip.

A reader gets a *frame sampler*: a pure function from the number of frames n to an int array of
frame indices of any shape (for example (C, T, M)). The reader finds n, asks the sampler for the
indices, decodes each distinct frame once and returns uint8 frames of shape
(*indices.shape, H, W, 3), shown the way a player shows them (rotation metadata applied).

Every backend reads FFmpeg's best video stream (see `decode_common.probe_video`). Backends
(tdsclip/data/backends.py): decord, pyav, torchcodec (optional). `auto` tries, per file, the
backends of `auto_route`; the next one is the fallback. The routes come from the
comparisons in tests/test_data_decoding.py (see docs/datasets.md).

When a file holds fewer decodable frames than its header or packet count claims, the sampler is
asked again with the true count, so the clip always comes from frames that exist.

Decoders print to stderr (FFmpeg's log, decord's warnings) from C. That text is captured while
a file is read: it is dropped (logged at DEBUG) when a backend reads the file and logged as a
warning, with the path, only when every backend fails.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

# PyAV (imported by decode_common) before decord: see decode_common.
from tdsclip.data.backends import READERS, count_decodable_frames, decord_is_exact
from tdsclip.data.decode_common import (
    BackendUnavailableError,
    FrameSampler,
    ProblemKind,
    VideoProbe,
    VideoReadError,
    probe_video,
)

__all__ = [
    "AUTO_ROUTES",
    "BACKENDS",
    "BackendUnavailableError",
    "DecodedClip",
    "FrameSampler",
    "ProblemKind",
    "VideoReadError",
    "auto_route",
    "backend_route",
    "check_backend",
    "count_decodable_frames",
    "decord_is_exact",
    "read_video",
    "read_video_frames",
]

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "decord", "pyav", "torchcodec")
# Container suffix -> backends tried in order under `backend: auto`. decord leads where it
# returned the same frames as a sequential PyAV decode (tests/test_data_decoding.py,
# tests/test_data_video_variants.py), which `backends.decord_is_exact` checks per file; PyAV
# is the fallback for files decord cannot open or decode, and the only backend for containers
# not measured.
AUTO_ROUTES: dict[str, tuple[str, ...]] = {
    ext: ("decord", "pyav") for ext in (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi")
}
_AUTO_DEFAULT_ROUTE = ("pyav",)
_MAX_NOISE_CHARS = 2000


@dataclass(frozen=True)
class DecodedClip:
    """Frames (*indices.shape, H, W, 3), the backend that read them, and why earlier ones
    of the route failed ("decord: ...")."""

    frames: np.ndarray
    backend: str
    failures: tuple[str, ...]


def check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"unknown decoding backend {backend!r}; choose one of {BACKENDS}")
    return backend


def backend_route(path: str, backend: str) -> tuple[str, ...]:
    """The backends tried, in order, for `path` under the given setting (by container only)."""
    if check_backend(backend) != "auto":
        return (backend,)
    return AUTO_ROUTES.get(os.path.splitext(path)[1].lower(), _AUTO_DEFAULT_ROUTE)


def auto_route(path: str, backend: str, probe: VideoProbe | None) -> tuple[str, ...]:
    """The backends tried for `path`: backend_route, where `auto` leaves decord out for
    sources it does not read exactly and for colours it converts otherwise than FFmpeg
    (10-bit, full range other than H.264's yuvj420p: measured, see docs/datasets.md)."""
    route = backend_route(path, backend)
    if backend != "auto" or probe is None or "decord" not in route:
        return route
    if decord_is_exact(path, probe) and probe.plain_8bit:
        return route
    return tuple(b for b in route if b != "decord")


@contextmanager
def _captured_stderr() -> Iterator[list[str]]:
    """Redirect file descriptor 2 (where C libraries write) to a temporary file.

    Yields a list that holds the captured text after the block. Python's own sys.stderr is
    flushed first so nothing written before is lost or reordered. Without a usable descriptor
    2 (a daemon), nothing is captured.
    """
    captured: list[str] = []
    if sys.stderr is not None:
        sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:
        yield captured
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            if sys.stderr is not None:
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured.append(sink.read().decode("utf-8", "replace"))


def _try_route(
    path: str, sampler: FrameSampler, route: tuple[str, ...], probe: VideoProbe | None
) -> DecodedClip | list[tuple[str, VideoReadError]]:
    """The clip from the first backend of `route` that reads the file, else every failure."""
    failures: list[tuple[str, VideoReadError]] = []
    for name in route:
        try:
            frames = READERS[name](path, sampler, probe)
        except VideoReadError as e:
            failures.append((name, e))
            continue
        except BackendUnavailableError:
            if len(route) == 1:
                raise
            logger.debug("backend %s unavailable, trying the next one", name)
            continue
        done = tuple(f"{n}: {e.reason}" for n, e in failures)
        return DecodedClip(frames, name, done)
    if not failures:
        raise BackendUnavailableError(f"none of the backends {route} is available")
    return failures


def _combined_error(path: str, failures: list[tuple[str, VideoReadError]]) -> VideoReadError:
    kinds = {e.kind for _, e in failures}
    kind: ProblemKind = "too_short" if kinds == {"too_short"} else "unreadable"
    return VideoReadError(path, kind, "; ".join(f"{n}: {e.reason}" for n, e in failures))


def read_video(path: str, sampler: FrameSampler, *, backend: str = "auto") -> DecodedClip:
    """The clip at `sampler(n)` and the backend that read it.

    Raises VideoReadError (missing / unreadable / too short) or BackendUnavailableError.
    """
    check_backend(backend)
    if not os.path.isfile(path):
        raise VideoReadError(path, "missing", "file not found")
    # The pyav reader opens the file itself; the others need the stream the probe finds.
    probe = probe_video(path) if backend != "pyav" else None
    route = auto_route(path, backend, probe)
    with _captured_stderr() as noise:
        result = _try_route(path, sampler, route, probe)
    text = noise[0].strip() if noise else ""
    if isinstance(result, DecodedClip):
        if text:
            logger.debug("%s: decoder messages (read by %s):\n%s", path, result.backend, text)
        return result
    if text:
        logger.warning(
            "%s: every backend failed; decoder messages:\n%s", path, text[-_MAX_NOISE_CHARS:]
        )
    raise _combined_error(path, result)


def read_video_frames(path: str, sampler: FrameSampler, *, backend: str = "auto") -> np.ndarray:
    """Frames of a video file at `sampler(n)`: uint8 np.ndarray (*indices.shape, H, W, 3).

    Raises VideoReadError (missing / unreadable / too short) or BackendUnavailableError.
    """
    return read_video(path, sampler, backend=backend).frames
