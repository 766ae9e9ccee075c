"""The parent's side of ``python -m tdsclip.benchmark``: which children to run, in what order,
and the report assembled from their results.

``benchmark(args)`` measures every (implementation, mode, batch size) in ``--rounds``
interleaved timing children and one memory child, multi-view inference once per
implementation, and with ``--breakdown`` one profiled child per mode and batch size;
``_derive`` adds throughput, the ratios to the floor and to the authors' model, and the memory
growth per clip.
"""

from __future__ import annotations

import argparse
import logging
import statistics
from typing import Any

import torch

from tdsclip.bench.builders import build_ours, compose
from tdsclip.bench.child import MMAP_ENV, run_child
from tdsclip.bench.flops import count_flops, paper_tflops
from tdsclip.bench.report import breakdown_row, machine_info
from tdsclip.engine.context import resolve_device
from tdsclip.engine.precision import resolve_precision

log = logging.getLogger(__name__)


def _check_options(args: argparse.Namespace, device: torch.device) -> None:
    if args.breakdown and device.type != "cpu":
        raise ValueError(
            "--breakdown sums the profiler's CPU self times, which on a GPU are launch times, "
            "not kernel times; run it with --device cpu (or profile the GPU with "
            "torch.profiler / Nsight Systems)"
        )
    if "cuda_graph" in args.modes and device.type != "cuda":
        raise ValueError("--modes cuda_graph captures the training step on a GPU: needs CUDA")


def _report_header(
    args: argparse.Namespace, cfg: Any, device: torch.device, precision: Any
) -> dict[str, Any]:
    """The report before any child runs: what was measured, on what, at what cost per view."""
    from tdsclip.models import count_parameters

    model = build_ours(cfg)
    trainable, frozen = count_parameters(model)
    tflops = count_flops(model, cfg)
    paper = paper_tflops(cfg.model.backbone.name, cfg.data.num_frames)
    return {
        "experiment": args.experiment,
        "overrides": args.overrides,
        "machine": machine_info(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "precision": precision.name,
        "precision_reason": precision.reason,
        "params": {"trainable": trainable, "frozen": frozen},
        "tflops_per_view": {"ours": tflops, "paper": paper},
        "keep_freed_memory": not args.default_allocator and device.type == "cpu",
        "runs": [],
    }


def _child_base(args: argparse.Namespace, precision: Any) -> dict[str, Any]:
    """The part of every child's spec that the command line sets."""
    return {
        "experiment": args.experiment,
        "overrides": args.overrides,
        "device": args.device,
        "precision": precision.name,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "reference_repo": str(args.reference_repo) if args.reference_repo else None,
        "keep_freed_memory": not args.default_allocator,
    }


def _implementations(args: argparse.Namespace) -> list[tuple[str, str]]:
    """(implementation, mode) pairs: ours in every mode, then the reference and baseline."""
    impls = [("ours", mode) for mode in args.modes]
    if args.reference_repo:
        impls.append(("reference", "default"))
    if args.full_finetune:
        impls.append(("finetune", "default"))
    return impls


def _add_peak_memory(run: dict[str, Any], base: dict[str, Any], device: torch.device) -> None:
    """Peak memory from one more child that times no floor (the reference's timing children
    hold a copy of our tower for it); on the CPU with freed memory going back to the OS at
    once. The timing children's peak stays as "rss" on the CPU."""
    peak = min(run.pop("peaks"))
    spec = {**base, "impl": run["impl"], "mode": run["mode"], "batch": run["batch"],
            "what": "train", "warmup": 1, "repeats": 1, "floor": False}  # fmt: skip
    if device.type == "cpu":
        run["rss_mb"] = peak
        run["peak_mb"] = run_child(spec, env=MMAP_ENV)["peak_mb"]
    else:
        run["peak_mb"] = run_child(spec)["peak_mb"]


def _measure_batch(
    base: dict[str, Any],
    impls: list[tuple[str, str]],
    batch: int,
    rounds: int,
    device: torch.device,
) -> list[dict[str, Any]]:
    """One run per implementation at ``batch``: step and floor times over ``rounds``
    interleaved timing children, their medians, and the peak memory."""
    runs = {key: {"impl": key[0], "mode": key[1], "batch": batch, "step_times": [],
                  "backbone_times": []} for key in impls}  # fmt: skip
    for round_ in range(rounds):  # interleaved, so that drift hits all alike
        for impl, mode in impls:
            log.info("measuring %s/%s, batch %d, round %d", impl, mode, batch, round_ + 1)
            spec = {**base, "impl": impl, "mode": mode, "batch": batch, "what": "train"}
            child = run_child(spec)
            run = runs[(impl, mode)]
            run["step_times"] += child["step_times"]
            run["backbone_times"] += child["backbone_times"]
            run["saved_mb"] = child["saved_mb"]
            run["keep_freed_memory"] = child["keep_freed_memory"]
            run.setdefault("peaks", []).append(child["peak_mb"])
    for run in runs.values():
        run["step_s"] = statistics.median(run["step_times"])
        run["backbone_s"] = statistics.median(run["backbone_times"])
        _add_peak_memory(run, base, device)
    return list(runs.values())


def _measure_inference(base: dict[str, Any], impls: list[tuple[str, str]]) -> list[dict]:
    """Multi-view inference of one video per implementation and mode."""
    runs = []
    for impl, mode in impls:
        if mode == "cuda_graph":
            continue  # graphs replace the training step; inference runs as by default
        runs.append(
            run_child({**base, "impl": impl, "mode": mode, "batch": 1, "what": "inference"})
        )
    return runs


def _measure_breakdown(base: dict[str, Any], args: argparse.Namespace) -> list[dict[str, Any]]:
    """One profiled child of ours per batch size and mode, as flat rows."""
    rows = []
    for batch in args.batch_sizes:
        for mode in args.modes:
            log.info("profiling ours/%s, batch %d", mode, batch)
            spec = {**base, "impl": "ours", "mode": mode, "batch": batch, "what": "breakdown"}
            rows.append(breakdown_row(run_child(spec)))
    return rows


def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    cfg = compose(args.experiment, args.overrides)
    device = resolve_device(args.device, 0)
    _check_options(args, device)
    precision = resolve_precision(args.precision, device)
    log.info("precision: %s", precision.describe())
    report = _report_header(args, cfg, device, precision)
    base = _child_base(args, precision)
    impls = _implementations(args)
    for batch in args.batch_sizes:
        report["runs"] += _measure_batch(base, impls, batch, args.rounds, device)
    inference = _measure_inference(base, impls)
    if inference:
        report["inference"] = inference
    if args.breakdown:
        report["breakdown"] = _measure_breakdown(base, args)
    _derive(report)
    return report


def _derive(report: dict[str, Any]) -> None:
    """Throughput, ratios to the backbone floor and to the reference, growth per clip."""
    runs = report["runs"]
    by_key = {(r["impl"], r["mode"], r["batch"]): r for r in runs}
    for r in runs:
        r["clips_per_s"] = r["batch"] / r["step_s"]
        r["vs_backbone"] = r["step_s"] / r["backbone_s"]
        smaller = [b for (i, m, b) in by_key if (i, m) == (r["impl"], r["mode"]) and b < r["batch"]]
        if not smaller:
            continue
        prev = by_key[(r["impl"], r["mode"], max(smaller))]
        extra = r["batch"] - prev["batch"]
        for key in ("peak_mb", "rss_mb", "saved_mb"):
            if r.get(key) is not None and prev.get(key) is not None:
                r[key.replace("_mb", "_mb_per_clip").replace("peak_", "")] = (
                    r[key] - prev[key]
                ) / extra
    for r in runs:  # second pass: the reference rows are complete now
        ref = by_key.get(("reference", "default", r["batch"]))
        if ref is None:
            continue
        r["time_vs_reference"] = r["step_s"] / ref["step_s"]
        # The same ratio with each step time read against the floor timed beside it in its
        # own processes: robust to a machine that runs some processes slower than others.
        r["floor_time_vs_reference"] = r["vs_backbone"] / ref["vs_backbone"]
        for key in ("mb_per_clip", "rss_mb_per_clip"):
            if key in r and key in ref:
                r[key.replace("per_clip", "vs_reference")] = r[key] / ref[key]
