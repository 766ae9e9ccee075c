"""scripts/benchmark_data.py runs and reports every backend (tiny settings)."""

import json
import math
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_benchmark_script_prints_table_and_json(tmp_path):
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [
            sys.executable,
            "scripts/benchmark_data.py",
            "--clips",
            "2",
            "--seconds",
            "0.5",
            "--height",
            "64",
            "--width",
            "96",
            "--skip-train-items",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
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
