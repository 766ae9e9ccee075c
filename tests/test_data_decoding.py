"""Decoding backends on real VP9 WebM / H.264 MP4 files and JPEG folders written by the tests.

The decord-vs-PyAV comparison here is the measurement behind `AUTO_ROUTES`: a full sequential
PyAV decode is the reference, and every backend must return exactly the frames at the indices a
clip asks for (unsorted, repeated, after seeks across keyframes).
"""

import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from data_fixtures import frame_id, write_corrupt_files, write_frame_folder, write_indexed_video

from tdsclip.data.decoding import (
    AUTO_ROUTES,
    BackendUnavailableError,
    VideoReadError,
    backend_route,
    read_video_frames,
)
from tdsclip.data.frame_folders import read_frame_folder
from tdsclip.data.sampling import local_windows, val_centres

NUM_FRAMES = 60
CONTAINERS = {"webm": "vp9", "mp4": "h264"}


def pyav_reference(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("videos")
    out = {}
    for ext, codec in CONTAINERS.items():
        # keyframes every 10 frames, so reading a clip seeks across GOPs
        out[ext] = root / f"clip.{ext}"
        write_indexed_video(out[ext], NUM_FRAMES, codec=codec, keyframe_interval=10)
    return out


def clip_indices(seed: int) -> np.ndarray:
    """Unsorted, repeated indices like a batch of clips asks for: (8, 5)."""
    return np.random.default_rng(seed).integers(0, NUM_FRAMES, size=(8, 5))


def assert_same_frames(got: np.ndarray, ref: np.ndarray, indices: np.ndarray) -> None:
    assert got.shape == (*indices.shape, *ref.shape[1:])
    assert [frame_id(f) for f in got.reshape(-1, *ref.shape[1:])] == indices.reshape(-1).tolist()
    # same frame, same pixels (both decode with FFmpeg; measured identical on this machine)
    diff = np.abs(got.astype(np.int16) - ref[indices].astype(np.int16))
    assert diff.mean() < 0.5, f"mean abs pixel difference {diff.mean():.3f}"


@pytest.mark.parametrize("ext", list(CONTAINERS))
def test_reference_decode_is_complete(videos, ext):
    ref = pyav_reference(videos[ext])
    assert [frame_id(f) for f in ref] == list(range(NUM_FRAMES))


@pytest.mark.parametrize("ext", list(CONTAINERS))
@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_backend_returns_the_requested_frames(videos, ext, backend):
    """The measurement: decord and PyAV agree with the reference on VP9 WebM and H.264 MP4.

    If decord fails here for a container, route that container to PyAV in AUTO_ROUTES.
    """
    ref = pyav_reference(videos[ext])
    for seed in range(4):
        indices = clip_indices(seed)
        got = read_video_frames(str(videos[ext]), lambda n, idx=indices: idx, backend=backend)
        assert_same_frames(got, ref, indices)


@pytest.mark.parametrize("ext", list(CONTAINERS))
def test_auto_routes_each_container_to_a_correct_backend(videos, ext):
    assert backend_route(f"x.{ext}", "auto") == AUTO_ROUTES[f".{ext}"]
    ref = pyav_reference(videos[ext])
    indices = clip_indices(10)
    got = read_video_frames(str(videos[ext]), lambda n: indices, backend="auto")
    assert_same_frames(got, ref, indices)


@pytest.mark.parametrize("ext", list(CONTAINERS))
def test_torchcodec_returns_the_requested_frames(videos, ext):
    """Runs fully where torchcodec and FFmpeg's shared libraries are installed; skips, saying
    which is missing, elsewhere (both are optional)."""
    try:
        import torchcodec  # noqa: F401
    except Exception as e:  # ImportError, or its native library failing to load
        pytest.skip(f"torchcodec is not usable here ({type(e).__name__}: {e})")
    indices = clip_indices(3)
    try:
        got = read_video_frames(str(videos[ext]), lambda n: indices, backend="torchcodec")
    except BackendUnavailableError as e:
        assert "FFmpeg" in str(e) and "backend" in str(e)  # says what to do
        pytest.skip(f"torchcodec is installed but cannot run here: {e}")
    assert_same_frames(got, pyav_reference(videos[ext]), indices)


def test_torchcodec_without_ffmpeg_says_how_to_fix(videos, monkeypatch):
    """A torchcodec whose FFmpeg libraries are missing (simulated: its decoder raises what
    torchcodec raises then) is a setup error that names FFmpeg and the other backends."""
    import sys
    import types

    def decoder(*args, **kwargs):
        raise RuntimeError("Could not load libtorchcodec. Likely causes: FFmpeg is not installed")

    fake = types.ModuleType("torchcodec.decoders")
    fake.VideoDecoder = decoder
    monkeypatch.setitem(sys.modules, "torchcodec", types.ModuleType("torchcodec"))
    monkeypatch.setitem(sys.modules, "torchcodec.decoders", fake)
    with pytest.raises(BackendUnavailableError, match="FFmpeg") as info:
        read_video_frames(str(videos["mp4"]), lambda n: clip_indices(3), backend="torchcodec")
    assert "backend" in str(info.value)


def last_frame_recording(seen: list[int]):
    """A sampler asking for the last frame and recording the frame counts it is given."""

    def sample(n: int) -> np.ndarray:
        seen.append(n)
        return np.array([n - 1])

    return sample


@pytest.mark.parametrize("backend", ["decord", "pyav", "auto"])
def test_webm_frame_count_comes_from_the_stream_not_the_header(tmp_path, backend):
    full = tmp_path / "full.webm"
    write_indexed_video(full, 40, codec="vp9")
    with av.open(str(full)) as container:
        assert container.streams.video[0].frames == 0  # WebM headers carry no frame count
    truncated = tmp_path / "truncated.webm"
    truncated.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    decodable = len(pyav_reference(truncated))
    assert 0 < decodable < 40  # the header still claims 40 frames' duration
    for path, count in ((full, 40), (truncated, decodable)):
        seen: list[int] = []
        last = read_video_frames(str(path), last_frame_recording(seen), backend=backend)
        assert seen[-1] == count
        assert frame_id(last[0]) == count - 1


def test_pyav_resamples_when_fewer_frames_decode_than_packets(tmp_path):
    """Damage in the middle of an MP4: packets remain, decoding stops early."""
    path = tmp_path / "damaged.mp4"
    write_indexed_video(path, 40, codec="h264")
    data = bytearray(path.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 2000] = bytes(2000)
    path.write_bytes(bytes(data))
    decodable = 0
    with av.open(str(path)) as container:
        container.streams.video[0].thread_count = 1  # as the readers decode
        try:
            for _ in container.decode(video=0):
                decodable += 1
        except av.FFmpegError:
            pass
    assert 0 < decodable < 40
    for backend in ("pyav", "auto"):  # decord fails on this file; auto falls back to PyAV
        got = read_video_frames(str(path), lambda n: val_centres(n, 8), backend=backend)
        assert [frame_id(f) for f in got] == val_centres(decodable, 8).tolist()


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_three_frame_video_gives_a_full_clip(tmp_path, backend):
    path = tmp_path / "short.mp4"
    write_indexed_video(path, 3, codec="h264")
    got = read_video_frames(
        str(path), lambda n: local_windows(val_centres(n, 8), 5, n), backend=backend
    )
    assert got.shape[:2] == (8, 5)
    ids = np.array([frame_id(f) for f in got.reshape(-1, *got.shape[2:])]).reshape(8, 5)
    np.testing.assert_array_equal(ids, local_windows(val_centres(3, 8), 5, 3))


@pytest.mark.parametrize("backend", ["decord", "pyav", "auto"])
def test_bad_files_raise_video_read_error(tmp_path, backend):
    bad = write_corrupt_files(tmp_path)
    with pytest.raises(VideoReadError) as missing:
        read_video_frames(str(tmp_path / "nope.mp4"), lambda n: np.arange(n), backend=backend)
    assert missing.value.kind == "missing"
    for path in bad.values():
        with pytest.raises(VideoReadError) as err:
            read_video_frames(str(path), lambda n: np.arange(n), backend=backend)
        assert err.value.kind == "unreadable"
        assert str(path) in str(err.value)
    if backend == "auto":  # both backends tried and both reasons reported, each named once
        assert "decord:" in err.value.reason and "pyav:" in err.value.reason
        assert err.value.reason.count("decord") == 1 and err.value.reason.count("pyav") == 1


def test_unknown_backend_is_rejected(videos):
    with pytest.raises(ValueError, match="unknown decoding backend"):
        read_video_frames(str(videos["mp4"]), lambda n: np.arange(n), backend="opencv")


def test_frame_folder_reads_one_based_files(tmp_path):
    write_frame_folder(tmp_path / "v", 7)
    got = read_frame_folder(
        str(tmp_path / "v"), lambda n: np.array([[n - 1, 0]]), image_tmpl="{:05d}.jpg"
    )
    assert got.shape == (1, 2, 48, 64, 3)
    assert [frame_id(got[0, 0]), frame_id(got[0, 1])] == [6, 0]


def test_frame_folder_gap_and_missing_folder(tmp_path):
    write_frame_folder(tmp_path / "gap", 6, skip=(3,))
    with pytest.raises(VideoReadError, match=r"00003\.jpg") as err:
        read_frame_folder(
            str(tmp_path / "gap"), lambda n: np.arange(6), image_tmpl="{:05d}.jpg", num_frames=6
        )
    assert err.value.kind == "unreadable"
    with pytest.raises(VideoReadError) as err:
        read_frame_folder(str(tmp_path / "none"), lambda n: np.arange(n), image_tmpl="{:05d}.jpg")
    assert err.value.kind == "missing"


# Counts the process's threads while PyAV's colour conversion is alive, after a warm-up decode.
THREADS_SCRIPT = """
import os, sys
import numpy as np
from tdsclip.data import backends
from tdsclip.data.decoding import read_video_frames

def threads():
    return len(os.listdir("/proc/self/task"))

seen = []
convert = backends._FfmpegRgb.__call__
def counting(self, frame):
    rgb = convert(self, frame)
    seen.append(threads())
    return rgb
backends._FfmpegRgb.__call__ = counting
read_video_frames(sys.argv[1], lambda n: np.arange(n), backend="pyav")  # warm-up
before, seen[:] = threads(), []
read_video_frames(sys.argv[1], lambda n: np.arange(n), backend="pyav")
print(before, max(seen))
"""


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads in Linux's /proc")
def test_pyav_decoding_starts_no_threads_of_its_own(videos):
    """A data worker decodes on its one thread: FFmpeg's default pools (a thread per CPU in the
    colour conversion's filter graph) would put every worker on every core."""
    run = subprocess.run(
        [sys.executable, "-c", THREADS_SCRIPT, str(videos["webm"])],
        capture_output=True,
        text=True,
        check=True,
    )
    before, during = map(int, run.stdout.split())
    assert during == before, run.stdout
