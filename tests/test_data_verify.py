"""The verify CLI, run as a subprocess on small broken datasets."""

import json
import subprocess
import sys
from pathlib import Path

from data_fixtures import (
    encode_video,
    indexed_frames,
    write_audio_only,
    write_corrupt_files,
    write_frame_folder,
    write_indexed_video,
    write_ssv2,
    write_two_stream_video,
)

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


def test_json_report_has_one_record_per_entry(tmp_path):
    """Rotated phone video, audio-only .mp4, two video streams, another frame template."""
    write_indexed_video(tmp_path / "v" / "good.mp4", 12, codec="h264")
    encode_video(tmp_path / "v" / "phone.mp4", indexed_frames(10, height=64, width=96), rotation=90)
    write_audio_only(tmp_path / "v" / "song.mp4")
    write_two_stream_video(tmp_path / "v" / "two.mp4")  # best stream: #1, 16 frames of 96x128
    write_frame_folder(tmp_path / "f" / "mm", 6, template="img_{:05d}.jpg")
    ann = tmp_path / "list.txt"
    ann.write_text("v/good.mp4 0\nv/phone.mp4 1\nv/song.mp4 0\nv/absent.mp4 1\nv/two.mp4 0\n")
    out = tmp_path / "report.json"
    result = run_verify(
        "--format", "videos", "--ann", str(ann), "--root", str(tmp_path), "--json", str(out)
    )
    assert result.returncode == 1, result.stderr
    records = json.loads(out.read_text())
    keys = ["path", "status", "frames", "height", "width", "detail"]
    assert [list(r) for r in records] == [keys] * 5
    good, phone, song, absent, two = ([r[k] for k in keys[1:]] for r in records)
    assert good == ["readable", 12, 64, 96, ""]
    assert phone == ["readable", 10, 96, 64, ""]  # portrait, as a player shows it
    assert song == ["unreadable", None, None, None, "no video stream"]
    assert absent == ["missing", None, None, None, "file not found"]
    assert two == ["readable", 16, 96, 128, ""]  # FFmpeg's best stream, not the first
    assert "no video stream" in result.stdout

    frames = tmp_path / "frames.txt"
    frames.write_text("f/mm 6 0\n")
    result = run_verify(
        "--format", "rawframes", "--ann", str(frames), "--root", str(tmp_path), "--json", str(out)
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (record,) = json.loads(out.read_text())
    assert [record[k] for k in keys[1:-1]] == ["readable", 6, 48, 64]
    assert "img_{:05d}.jpg" in record["detail"]


def test_labels_are_range_checked_with_num_classes(tmp_path):
    write_indexed_video(tmp_path / "a.mp4", 6, codec="h264")
    ann = tmp_path / "list.txt"
    ann.write_text("a.mp4 0\na.mp4 5\n")
    result = run_verify("--format", "videos", "--ann", str(ann), "--root", str(tmp_path))
    assert result.returncode == 0 and "not range-checked" in result.stderr
    result = run_verify(
        "--format", "videos", "--ann", str(ann), "--root", str(tmp_path), "--num-classes", "5"
    )
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == f"error: {ann}:2: label 5 must be in [0, 5)"
    labels = tmp_path / "labels.txt"
    labels.write_text("a\nb\nc\n")
    result = run_verify(
        "--format", "videos", "--ann", str(ann), "--root", str(tmp_path), "--labels", str(labels)
    )
    assert result.returncode == 2 and f"{ann}:2: label 5 must be in [0, 3)" in result.stderr


def test_list_variants_are_errors_with_line_or_read_with_offset(tmp_path):
    write_frame_folder(tmp_path / "long", 12)
    ann = tmp_path / "frames.txt"
    ann.write_text("long 0 6 0\nlong 6 6 1\nlong 8 6 1\n")
    result = run_verify("--format", "rawframes", "--ann", str(ann), "--root", str(tmp_path))
    assert result.returncode == 2
    assert f"error: {ann}:1: 4 columns" in result.stderr and "with_offset" in result.stderr
    result = run_verify(
        "--format", "rawframes", "--ann", str(ann), "--root", str(tmp_path), "--with-offset"
    )
    assert result.returncode == 1
    assert result.stdout.splitlines()[-1] == "checked 3 videos: 2 readable, 1 unreadable, 0 missing"
    assert "4 frame files from 00009.jpg, 6 claimed" in result.stdout
    ann.write_bytes(b"long 6 0\nlong\xff 6 1\n")
    result = run_verify("--format", "rawframes", "--ann", str(ann), "--root", str(tmp_path))
    assert result.returncode == 2 and f"{ann}:2: not UTF-8 text" in result.stderr
