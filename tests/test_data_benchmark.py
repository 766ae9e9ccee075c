"""scripts/benchmark_data.py runs and reports every backend (tiny settings)."""

import json
import math
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_benchmark(out: Path, *args: str, timeout: float) -> subprocess.CompletedProcess:
    """scripts/benchmark_data.py on tiny generated files (2 clips, 64x96, 0.5 s per row)."""
    tiny = ["--clips", "2", "--seconds", "0.5", "--height", "64", "--width", "96"]
    result = subprocess.run(
        [sys.executable, "scripts/benchmark_data.py", *tiny, *args, "--json", str(out)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stderr
    return result


def test_benchmark_script_prints_table_and_json(tmp_path):
    out = tmp_path / "bench.json"
    result = run_benchmark(out, "--skip-train-items", timeout=120)
    rows = json.loads(out.read_text())["rows"]
    assert [(r["source"].split()[0], r["backend"]) for r in rows] == [
        (c, b) for c in ("webm", "mp4") for b in ("decord", "pyav", "torchcodec", "auto")
    ]
    for r in rows:
        if "unavailable" in r:
            assert r["backend"] == "torchcodec"
        else:
            assert math.isfinite(r["clips_per_s"])
    assert "clips/s" in result.stdout and result.stdout.rstrip().splitlines()[-1].startswith(
        "machine:"
    )


def test_benchmark_times_training_items_with_both_augment_on(tmp_path):
    out = tmp_path / "items.json"
    args = ["--batch", "2", "--backends", "auto", "--augment-on", "worker", "device"]
    result = run_benchmark(out, *args, timeout=300)
    items = json.loads(out.read_text())["items"]
    assert [(r["format"], r["augment_on"]) for r in items] == [
        (f, a) for f in ("ssv2", "k400") for a in ("worker", "device")
    ]
    for r in items:
        assert (
            r["views"] == 4 and math.isfinite(r["views_per_core_s"]) and r["views_per_core_s"] > 0
        )
        assert 0 < r["decode_share"] < 1 and 0 <= r["device_share"] < 1
        assert (r["device_share"] > 0) == (r["augment_on"] == "device")
    assert "device / worker views per core" in result.stdout
