"""Frame-index sampling: which frames of an n-frame video make a clip.

Legend: n frames in the video, T segments (`num_frames` in the config), M local frames around
every sampled centre frame (`num_local_frames`), C temporal clips at test time.

All functions are pure: they read no global state, and the only randomness comes from the
`numpy.random.Generator` passed in. Indices are 0-based.

Segment i of T covers the frames [floor(i*n/T), floor((i+1)*n/T)), widened to one frame when
n < T, so even a 3-frame video gives T valid centres.
"""

from __future__ import annotations

import numpy as np


def _check(num_frames: int, num_segments: int) -> None:
    if num_frames < 1:
        raise ValueError(f"a video needs at least 1 frame to sample from, got {num_frames}")
    if num_segments < 1:
        raise ValueError(f"num_segments must be >= 1, got {num_segments}")


def _segment_bounds(num_frames: int, num_segments: int) -> tuple[np.ndarray, np.ndarray]:
    """Start (inclusive) and end (exclusive) frame of each of the T equal segments."""
    i = np.arange(num_segments, dtype=np.int64)
    starts = (i * num_frames) // num_segments  # (T,)
    ends = np.maximum(((i + 1) * num_frames) // num_segments, starts + 1)  # (T,)
    return starts, ends


def train_centres(num_frames: int, num_segments: int, rng: np.random.Generator) -> np.ndarray:
    """TSN sampling: one uniformly random frame in each of T equal segments.

    Returns int64 (T,), non-decreasing, values in [0, n).
    """
    _check(num_frames, num_segments)
    starts, ends = _segment_bounds(num_frames, num_segments)
    return rng.integers(starts, ends).astype(np.int64)  # (T,)


def clip_centres(num_frames: int, num_segments: int, num_clips: int) -> np.ndarray:
    """Deterministic multi-clip sampling: clip k takes the point (k+1)/(C+1) of every segment.

    With C = 1 this is the centre of every segment (the validation protocol); with C = 2 the
    clips sit at 1/3 and 2/3 of each segment. Position i + (k+1)/(C+1) in segment units is
    computed in integers: floor((i*(C+1) + k+1) * n / (T*(C+1))).

    Returns int64 (C, T), values in [0, n).
    """
    _check(num_frames, num_segments)
    if num_clips < 1:
        raise ValueError(f"num_clips must be >= 1, got {num_clips}")
    k = np.arange(num_clips, dtype=np.int64)[:, None]  # (C, 1)
    i = np.arange(num_segments, dtype=np.int64)[None, :]  # (1, T)
    return ((i * (num_clips + 1) + k + 1) * num_frames) // (num_segments * (num_clips + 1))


def val_centres(num_frames: int, num_segments: int) -> np.ndarray:
    """The centre frame of each of T equal segments: int64 (T,)."""
    return clip_centres(num_frames, num_segments, num_clips=1)[0]


def local_windows(centres: np.ndarray, num_local_frames: int, num_frames: int) -> np.ndarray:
    """The M frames c-M//2 .. c+M//2 around every centre c, clamped to [0, n-1].

    centres: int (...,) -> int64 (..., M); the middle entry (m = M//2) is the centre itself.
    """
    if num_local_frames < 1 or num_local_frames % 2 == 0:
        raise ValueError(f"num_local_frames must be odd and >= 1, got {num_local_frames}")
    half = num_local_frames // 2
    offsets = np.arange(-half, half + 1, dtype=np.int64)  # (M,)
    windows = np.asarray(centres, dtype=np.int64)[..., None] + offsets  # (..., M)
    return np.clip(windows, 0, num_frames - 1)
