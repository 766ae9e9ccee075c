"""The verify CLI, run as a subprocess on small broken datasets."""

import subprocess
import sys
from pathlib import Path

from data_fixtures import write_corrupt_files, write_frame_folder, write_indexed_video, write_ssv2

REPO = Path(__file__).resolve().parents[1]


def run_verify(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tdsclip.data.verify", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )


def test_video_list_with_missing_corrupt_and_short_files(tmp_path):
    bad = write_corrupt_files(tmp_path / "v")
    write_indexed_video(tmp_path / "v" / "good.webm", 20, codec="vp9")
    write_indexed_video(tmp_path / "v" / "three.mp4", 3, codec="h264")
    ann = tmp_path / "list.txt"
    ann.write_text(
        "v/good.webm 0\nv/three.mp4 1\nv/absent.mp4 0\n"
        f"v/{bad['garbage'].name} 1\nv/{bad['truncated'].name} 1\n"
    )
    result = run_verify(
        "--format", "videos", "--ann", str(ann), "--root", str(tmp_path), "--workers", "2"
    )
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert lines[-1] == "checked 5 videos: 2 readable, 2 unreadable, 1 missing"
    rows = {line.split()[1]: line.split()[0] for line in lines[2:-1]}
    assert rows == {
        str(tmp_path / "v" / "absent.mp4"): "missing",
        str(bad["garbage"]): "unreadable",
        str(bad["truncated"]): "unreadable",
    }
    assert lines[0].split() == ["problem", "path", "detail"]


def test_frame_folders_with_gap_and_too_few_frames(tmp_path):
    write_frame_folder(tmp_path / "f" / "ok", 5)
    write_frame_folder(tmp_path / "f" / "gap", 6, skip=(3,))
    write_frame_folder(tmp_path / "f" / "short", 4)
    (tmp_path / "f" / "broken").mkdir()
    write_frame_folder(tmp_path / "f" / "broken", 3)
    (tmp_path / "f" / "broken" / "00002.jpg").write_bytes(b"not a jpeg")
    ann = tmp_path / "frames.txt"
    ann.write_text("f/ok 5 0\nf/gap 6 0\nf/short 9 1\nf/broken 3 1\nf/none 4 0\n")
    result = run_verify("--format", "rawframes", "--ann", str(ann), "--root", str(tmp_path))
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[-1] == "checked 5 videos: 1 readable, 3 unreadable, 1 missing"
    table = "\n".join(lines[:-1])
    assert f"frame_gap       {tmp_path / 'f' / 'gap'}" in table and "00003.jpg" in table
    assert (
        f"too_short       {tmp_path / 'f' / 'short'}" in table
        and "4 frame files, 9 claimed" in table
    )
    assert f"unreadable      {tmp_path / 'f' / 'broken'}" in table and "00002.jpg" in table
    assert f"missing         {tmp_path / 'f' / 'none'}" in table


def test_all_readable_exits_zero(tmp_path):
    files = write_ssv2(tmp_path)
    result = run_verify(
        "--format",
        "ssv2",
        "--ann",
        str(files["train"]),
        "--root",
        str(files["root"]),
        "--labels",
        str(files["labels"]),
        "--backend",
        "pyav",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == [
        "no problems found",
        "checked 4 videos: 4 readable, 0 unreadable, 0 missing",
    ]


def test_malformed_annotation_is_reported_with_line(tmp_path):
    ann = tmp_path / "list.txt"
    ann.write_text("a.mp4 0\nb.mp4\n")
    result = run_verify("--format", "videos", "--ann", str(ann), "--root", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == f"error: {ann}:2: expected `<video path> <label>`"
