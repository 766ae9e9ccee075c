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
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tdsclip.engine.launch import compose_config
from tdsclip.report.paper import load_paper

# Videos per split of the official releases (SSv1: the 20BN CSV files; SSv2: the 20BN JSON
# files). Kinetics-400 copies differ as YouTube videos disappear; ~240k/~20k is typical.
DATASETS = {
    "ssv1": (86_017, 11_522),
    "ssv2": (168_913, 24_777),
    "k400": (240_000, 20_000),
}


@dataclass(frozen=True)
class Recipe:
    """What a run's config says about its cost: epochs, clips per video per epoch (repeated
    augmentation) and views per video of the multi-view test."""

    epochs: int
    num_sample: int
    views: int


def recipe(overrides: list[str]) -> Recipe:
    cfg = compose_config(overrides)
    views = cfg.data.test_clips * cfg.data.test_crops
    return Recipe(int(cfg.trainer.epochs), int(cfg.data.num_sample), int(views))


def rates(report: dict) -> tuple[float, float, float]:
    """Training clips/s with CUDA graphs and eager, inference clips/s, at batch 16."""
    runs = {(r["impl"], r["mode"], r["batch"]): r for r in report["runs"]}
    graph = runs[("ours", "cuda_graph", 16)]["clips_per_s"]
    eager = runs[("ours", "default", 16)]["clips_per_s"]
    infer = next(r for r in report["inference"] if r["impl"] == "ours" and r["mode"] == "default")
    return graph, eager, infer["clips_per_s"]


def hours(dataset: str, run: Recipe, scale: float, measured: tuple[float, float, float],
          test: bool):  # fmt: skip
    train, val = DATASETS[dataset]
    graph, eager, infer = (r / scale for r in measured)
    train_clips = train * run.num_sample * run.epochs
    eval_clips = val * run.epochs + (val * run.views if test else 0)
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
        run = recipe(e.command())
        one, eight = hours(dataset, run, scale, measured, test=True)
        mark = "" if scale == 1 else "~"
        train, val = DATASETS[dataset]
        print(f"| `{e.experiment}` (Tab. {e.table}) | {run.epochs} | {train:,} / {val:,} "
              f"| {mark}{one:.1f} | {mark}{eight:.1f} |")  # fmt: skip
    tables = {}
    for e in entries:
        if e.table not in ("1", "2"):
            tables.setdefault((e.table, e.preset), []).append(e)
    one, eight = hours("ssv1", recipe(["experiment=ssv1_b16_8f"]), 1.0, measured, test=False)
    print(f"\none ablation cell (ssv1_b16_8f recipe, no test): {one:.1f} GPU-h with CUDA graphs,"
          f" {eight:.1f} eager")  # fmt: skip
    for (table, preset), cells in tables.items():
        n = len(cells)
        print(f"Tab. {table} `ablation={preset}`: {n} jobs, {n * one:.1f} / {n * eight:.1f} GPU-h")
    total = sum(len(c) for c in tables.values())
    print(f"Tables 3-4: {total} jobs, {total * one:.0f} / {total * eight:.0f} GPU-h")


if __name__ == "__main__":
    main()
