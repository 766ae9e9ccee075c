"""GPU-hours of the paper's runs at a measured step rate: the README's "Reproduce the paper"
table.

    python scripts/gpu_hours.py docs/benchmarks/ssv2_b16_8f_h200.json

Reads the benchmark report (`python -m tdsclip.benchmark --json`, B/16, 8 frames, batch 16)
and tdsclip/paper.yaml, and prints per experiment and per ablation table the GPU-hours of
training (train videos x num_sample clips per epoch), the validation after every epoch (one
view per video) and, for Tables 1-2, the multi-view test: clips / measured clips per second.
Rows other than B/16 8 frames were not measured: their rates are the measured ones divided by
the paper's TFLOPs ratio (marked ~). Data loading and DDP communication are assumed to keep up.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tdsclip.report.paper import load_paper

# Videos per split of the official releases (SSv1: the 20BN CSV files; SSv2: the 20BN JSON
# files). Kinetics-400 copies differ as YouTube videos disappear; ~240k/~20k is typical.
DATASETS = {
    "ssv1": (86_017, 11_522),
    "ssv2": (168_913, 24_777),
    "k400": (240_000, 20_000),
}
EPOCHS = {"ssv1": 40, "ssv2": 30, "k400": 30}  # SPEC section 9 / configs/experiment
NUM_SAMPLE = 2  # repeated augmentation: each video is two clips per epoch
VIEWS = {"ssv1": 6, "ssv2": 6, "k400": 12}  # test: 3 crops x 2 clips (SS), x 4 clips (K400)


def rates(report: dict) -> tuple[float, float, float]:
    """Training clips/s with CUDA graphs and eager, inference clips/s, at batch 16."""
    runs = {(r["impl"], r["mode"], r["batch"]): r for r in report["runs"]}
    graph = runs[("ours", "cuda_graph", 16)]["clips_per_s"]
    eager = runs[("ours", "default", 16)]["clips_per_s"]
    infer = next(r for r in report["inference"] if r["impl"] == "ours" and r["mode"] == "default")
    return graph, eager, infer["clips_per_s"]


def hours(dataset: str, scale: float, measured: tuple[float, float, float], test: bool):
    train, val = DATASETS[dataset]
    graph, eager, infer = (r / scale for r in measured)
    train_clips = train * NUM_SAMPLE * EPOCHS[dataset]
    eval_clips = val * EPOCHS[dataset] + (val * VIEWS[dataset] if test else 0)
    return (train_clips / graph + eval_clips / infer) / 3600, (
        train_clips / eager + eval_clips / infer
    ) / 3600


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("report", type=Path)
    report = json.loads(parser.parse_args().report.read_text())
    measured = rates(report)
    entries = load_paper()
    base = next(e for e in entries if e.id == "ssv1_b16_8f").tflops
    print(f"measured on {report['device']}: {measured[0]:.1f} clips/s training with CUDA graphs,")
    print(f"{measured[1]:.1f} eager, {measured[2]:.1f} clips/s inference (batch 16, B/16, 8f)\n")
    print("| run | epochs | train / val videos | GPU-h, 1 GPU, graphs | GPU-h, 8 GPUs, eager |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for e in entries:
        if e.table not in ("1", "2"):
            continue
        scale = e.tflops / base
        dataset = e.experiment.split("_")[0]
        one, eight = hours(dataset, scale, measured, test=True)
        mark = "" if scale == 1 else "~"
        train, val = DATASETS[dataset]
        print(f"| `{e.experiment}` (Tab. {e.table}) | {EPOCHS[dataset]} | {train:,} / {val:,} "
              f"| {mark}{one:.1f} | {mark}{eight:.1f} |")  # fmt: skip
    tables = {}
    for e in entries:
        if e.table not in ("1", "2"):
            tables.setdefault((e.table, e.preset), []).append(e)
    one, eight = hours("ssv1", 1.0, measured, test=False)
    print(f"\none ablation cell (ssv1_b16_8f recipe, no test): {one:.1f} GPU-h with CUDA graphs,"
          f" {eight:.1f} eager")  # fmt: skip
    for (table, preset), cells in tables.items():
        n = len(cells)
        print(f"Tab. {table} `ablation={preset}`: {n} jobs, {n * one:.1f} / {n * eight:.1f} GPU-h")
    total = sum(len(c) for c in tables.values())
    print(f"Tables 3-4: {total} jobs, {total * one:.0f} / {total * eight:.0f} GPU-h")


if __name__ == "__main__":
    main()
