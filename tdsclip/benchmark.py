"""Cost of a configured TDS-CLIP: parameters, FLOPs, training step, memory, inference.

    python -m tdsclip.benchmark --experiment ssv2_b16_8f --batch-sizes 1 2 --json bench.json
    python -m tdsclip.benchmark --reference-repo /scratch/TDS-CLIP   # time the authors' model too

Random weights at full size; nothing is downloaded or read besides the configs. Every
(implementation, mode, batch size) is measured in fresh child processes so that the peak
memory of one cannot hide in another's: CUDA max-allocated on a GPU, peak RSS on the CPU.
On the CPU the peak RSS is measured twice: in the timing child, whose allocator is set as
``python -m tdsclip.train`` sets it (``trainer.cpu_keep_freed_memory``: freed memory kept for
reuse; ``--default-allocator`` times with glibc's defaults instead) ("rss" columns, which
include the heap's high-water mark and vary by tens of MB from run to run), and in a second
child with glibc's ``MALLOC_MMAP_THRESHOLD_`` fixed at 64 KiB, so that
every freed tensor goes back to the OS at once and the RSS follows the live tensors, the
closest CPU analogue of CUDA's max-allocated ("peak MB", "MB/clip" columns).
``--reference-repo`` points at a local checkout of the authors' code (BBYL9413/TDS-CLIP);
their ``clip/model.py`` is imported from there at run time, never copied into tdsclip.
``--full-finetune`` adds the same CLIP tower fully fine-tuned (frame-mean pooling, linear
head), the baseline whose memory a frozen tower avoids. On a GPU, ``--modes cuda_graph`` times
the training step as ``trainer.cuda_graph=true`` runs it (forward and backward replayed as CUDA
graphs; its saved-activation column stays empty, the graph's pool holds them, and its peak
memory is counted from before the capture, which allocates that pool).

Printed: a table per implementation and batch size, with the training step time, clips/s,
the frozen backbone's forward alone on the same input (the floor: our tower, timed in the
same processes, alternating with the training steps; the reference's processes build a copy
of our tower for it) and the ratio to it, the peak memory and its growth per extra clip, and
(with a reference) the ratios to the authors': of the median step times ("time vs ref") and
of the steps read against their own processes' floors ("floor-read vs ref", which a machine
that runs some processes 5-10% slower than others does not move). The "rss" columns come
from the timing processes; only their growth per clip is compared, since the reference's
copy of our tower adds the same offset at every batch size. Every configuration runs in
``--rounds`` interleaved child processes; times are medians over all of them.
``--from-json`` prints a saved report again; ``--markdown`` adds the README's table.
"""

from __future__ import annotations

import argparse
import builtins
import contextlib
import importlib.util
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

import tdsclip
from tdsclip import runtime

log = logging.getLogger("tdsclip.benchmark")

# The paper's per-view cost (Tab. 1 / 2, "TFLOPs", one multiply-add counted once).
PAPER_TFLOPS = {
    ("ViT-B-16", 8): 0.2,
    ("ViT-B-16", 16): 0.4,
    ("ViT-B-16", 32): 0.7,
    ("ViT-L-14", 8): 0.8,
}


# ----------------------------------------------------------------------------- config
def compose(experiment: str | None, overrides: list[str]) -> Any:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    OmegaConf.register_new_resolver("run_stamp", lambda: "benchmark", replace=True)
    extra = [f"experiment={experiment}"] if experiment else []  # "": the default job
    with initialize_config_dir(config_dir=runtime.CONFIG_DIR, version_base="1.3"):
        cfg = hydra_compose("train", overrides=[*extra, *overrides])
    cfg.model.backbone.pretrained = None  # random weights: the cost does not depend on them
    return cfg


def build_ours(cfg: Any, *, grad_checkpointing: bool = False, compile_blocks: bool = False):
    from tdsclip.models import build_model

    model = build_model(cfg.model)
    model.side.set_grad_checkpointing(grad_checkpointing)
    if compile_blocks:
        model.side.compile_blocks()
    return model


def _tower_dims(cfg: Any) -> dict[str, Any]:
    """The configured CLIP tower's dims (image and patch size, width, layers, heads, MLP)."""
    from tdsclip.models.factory import BACKBONE_DIM_KEYS, backbone_dims

    b = cfg.model.backbone
    return backbone_dims(b.name, **{k: b[k] for k in BACKBONE_DIM_KEYS})


def build_reference(repo: Path, cfg: Any) -> tuple[torch.nn.Module, Any]:
    """The authors' VisualTransformer + fc, frozen like their training script does."""
    spec = importlib.util.spec_from_file_location("tds_reference_model", repo / "clip" / "model.py")
    if spec is None or spec.loader is None:
        raise FileNotFoundError(f"no clip/model.py under {repo}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    dims = _tower_dims(cfg)
    real_print = builtins.print
    builtins.print = lambda *a, **k: None  # their constructor prints; keep our output clean
    try:
        visual = module.VisualTransformer(
            input_resolution=dims["image_size"],
            patch_size=dims["patch_size"],
            width=dims["width"],
            layers=dims["layers"],
            heads=dims["heads"],
            output_dim=512,
            T=cfg.data.num_frames,
            side_dim=cfg.model.side.dim,
            num_diff=cfg.data.num_local_frames,
        )
    finally:
        builtins.print = real_print
    for name, param in visual.named_parameters():
        param.requires_grad = "side" in name  # their `my_fix_clip`: only side parts train
    model = torch.nn.ModuleDict(
        {"visual": visual, "fc": torch.nn.Linear(cfg.model.side.dim, cfg.model.num_classes)}
    )
    m = cfg.data.num_local_frames

    def forward(video: torch.Tensor) -> torch.Tensor:
        b, t = video.shape[:2]
        frames = video.reshape(b * t, m * 3, *video.shape[-2:])  # their (bt, m*c, h, w)
        return model["fc"](model["visual"](frames))

    return model, forward


def build_full_finetune(cfg: Any) -> tuple[torch.nn.Module, Any]:
    """The baseline side-tuning is measured against: the same CLIP tower fully fine-tuned
    (every weight trainable, fp32 master weights under autocast), its pooled per-frame
    embeddings averaged over time into a linear classifier, on the centre frame of each
    segment. Not a model tdsclip trains; it shows what the frozen tower saves."""
    import open_clip
    from open_clip.transformer import QuickGELU, VisionTransformer

    name = cfg.model.backbone.name
    dims = _tower_dims(cfg)
    embed = open_clip.get_model_config(name)["embed_dim"] if name else dims["width"]
    visual = VisionTransformer(
        image_size=dims["image_size"],
        patch_size=dims["patch_size"],
        width=dims["width"],
        layers=dims["layers"],
        heads=dims["heads"],
        mlp_ratio=dims["mlp_ratio"],
        output_dim=embed,
        act_layer=QuickGELU,
    )
    model = torch.nn.ModuleDict(
        {"visual": visual, "fc": torch.nn.Linear(embed, cfg.model.num_classes)}
    )
    centre = cfg.data.num_local_frames // 2

    def forward(video: torch.Tensor) -> torch.Tensor:  # (B, T, M, 3, H, W)
        b, t = video.shape[:2]
        frames = video[:, :, centre].flatten(0, 1)  # (BT, 3, H, W)
        features = model["visual"](frames).view(b, t, -1).mean(1)  # (B, E)
        return model["fc"](features)

    return model, forward


# ------------------------------------------------------------------------------ child
def _floor_backbone(cfg: Any, device: torch.device, dtype: torch.dtype | None):
    from tdsclip.models import build_backbone

    backbone = build_backbone(cfg.model).to(device)
    return backbone.cast_weights(dtype) if dtype is not None else backbone


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device: torch.device, warmup: int, repeats: int) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return times


def _saved_activation_mb(step_forward) -> float:
    """MiB of distinct storages autograd keeps for backward during one forward."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = step_forward()
    loss.backward()
    return sum(seen.values()) / 2**20


def child_measure(spec: dict[str, Any]) -> dict[str, Any]:
    """One measurement in this (fresh) process; see ``run_child``."""
    torch.manual_seed(0)
    cfg = compose(spec["experiment"], spec["overrides"])
    device = runtime.resolve_device(spec["device"], 0)
    dtype = runtime.amp_dtype(spec["precision"])
    batch = spec["batch"]
    shape = (
        batch,
        cfg.data.num_frames,
        cfg.data.num_local_frames,
        3,
        cfg.data.input_size,
        cfg.data.input_size,
    )
    video = torch.randn(shape, device=device)
    labels = torch.randint(0, cfg.model.num_classes, (batch,), device=device)
    impl, mode = spec["impl"], spec["mode"]
    graphed = mode == "cuda_graph"  # trainer.cuda_graph: autocast without its weight cache

    timing = spec["what"] in ("train", "breakdown") and spec.get("floor", True)
    if timing and device.type == "cpu":
        # What `python -m tdsclip.train` does on the CPU (trainer.cpu_keep_freed_memory), for
        # every implementation alike; not in the memory child, whose allocator setting
        # makes its RSS follow the live tensors.
        keeps_freed = spec["keep_freed_memory"] and runtime.keep_freed_memory()
    else:
        keeps_freed = False
    if impl in ("reference", "finetune"):
        model, forward = (
            build_reference(Path(spec["reference_repo"]), cfg)
            if impl == "reference"
            else build_full_finetune(cfg)
        )
        model.to(device).train()
        params = [p for p in model.parameters() if p.requires_grad]
    else:
        model = build_ours(
            cfg, grad_checkpointing=mode == "checkpointing", compile_blocks=mode == "compile"
        ).to(device)
        if dtype is not None:
            model.backbone.cast_weights(dtype)
        model.train()
        if graphed:
            # The graphs' private pool holds the step's activations; max-allocated sees that
            # pool only while the capture fills it, so a graphed step's peak counts from here
            # (the capture's eager warm-up steps included).
            torch.cuda.reset_peak_memory_stats(device)
            runtime.capture_cuda_graphs(model, video, dtype)
        forward = model
        params = list(model.side.parameters())
    optimizer = torch.optim.AdamW(params, lr=1e-5, fused=True)  # the same for every impl

    def forward_loss() -> torch.Tensor:
        with runtime.autocast(device, dtype, cache=not graphed):
            logits = forward(video)
        return F.cross_entropy(logits.float(), labels)

    def train_step() -> None:
        forward_loss().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    result: dict[str, Any] = {
        "impl": impl,
        "mode": mode,
        "batch": batch,
        "keep_freed_memory": keeps_freed,
    }
    centre = video[:, :, cfg.data.num_local_frames // 2].flatten(0, 1)  # (BT, 3, H, W)
    backbone = None
    if timing:
        # The floor, timed in every timing process (the reference's too, with our tower) so
        # that each step time can be read against the machine's speed at that moment.
        backbone = model.backbone if impl == "ours" else _floor_backbone(cfg, device, dtype)

    def backbone_forward() -> None:
        with runtime.autocast(device, dtype):
            for _ in backbone.iter_layers(centre):
                pass

    def steps_and_floors() -> tuple[list[float], list[float]]:
        """Warm-up, then step and floor timed alternately, so that both see the same
        machine; the floor's first calls set up kernels too (cuBLAS on a GPU)."""
        fns = [train_step] if backbone is None else [train_step, backbone_forward]
        for _ in range(spec["warmup"]):
            for fn in fns:
                fn()
        times: list[list[float]] = [[], []]
        for _ in range(spec["repeats"]):
            for fn, seconds in zip(fns, times, strict=False):
                seconds += _timed(fn, device, 0, 1)
        return times[0], times[1]

    if spec["what"] == "breakdown":
        from tdsclip.breakdown import op_breakdown

        steps, floors = steps_and_floors()
        repeats = spec["repeats"]
        result["step"] = op_breakdown(train_step, repeats, statistics.median(steps))
        result["floor"] = op_breakdown(backbone_forward, repeats, statistics.median(floors))
    elif spec["what"] == "train":
        if device.type == "cuda" and not graphed:
            torch.cuda.reset_peak_memory_stats(device)
        steps, floors = steps_and_floors()
        result["step_times"] = steps
        result["backbone_times"] = floors
        result["peak_mb"] = runtime.peak_memory_mb(device)
        # A graph keeps its activations in its own pool, out of saved-tensor hooks' sight.
        result["saved_mb"] = None if graphed else _saved_activation_mb(forward_loss)
        optimizer.zero_grad(set_to_none=True)
    elif spec["what"] == "inference":
        model.eval()
        views = cfg.data.test_clips * cfg.data.test_crops
        clips = torch.randn((views, *shape[1:]), device=device)

        def infer() -> None:
            with torch.no_grad(), runtime.autocast(device, dtype):
                forward(clips).float().softmax(-1).mean(0)

        seconds = statistics.median(_timed(infer, device, spec["warmup"], spec["repeats"]))
        result |= {"views": views, "video_s": seconds, "clips_per_s": views / seconds}
    return result


MMAP_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536"}


def run_child(spec: dict[str, Any], env: dict[str, str] | None = None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "tdsclip.benchmark", "--child", json.dumps(spec), str(out)]
        full_env = {**os.environ, **(env or {})}
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=full_env)
        if proc.returncode != 0 or not out.is_file():
            raise RuntimeError(f"benchmark child failed ({spec}):\n{proc.stderr[-4000:]}")
        return json.loads(out.read_text())


# ----------------------------------------------------------------------------- parent
def count_flops(cfg: Any) -> float:
    """Multiply-adds of one view's forward (what the paper and fvcore call FLOPs), in T."""
    from tdsclip.breakdown import count_gmac

    model = build_ours(cfg).eval()
    shape = (
        1,
        cfg.data.num_frames,
        cfg.data.num_local_frames,
        3,
        cfg.data.input_size,
        cfg.data.input_size,
    )
    with torch.no_grad():
        return count_gmac(lambda: model(torch.zeros(shape))) / 1e3


def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    from tdsclip.models import count_parameters

    cfg = compose(args.experiment, args.overrides)
    device = runtime.resolve_device(args.device, 0)
    if args.breakdown and device.type != "cpu":
        raise ValueError(
            "--breakdown sums the profiler's CPU self times, which on a GPU are launch times, "
            "not kernel times; run it with --device cpu (or profile the GPU with "
            "torch.profiler / Nsight Systems)"
        )
    if "cuda_graph" in args.modes and device.type != "cuda":
        raise ValueError("--modes cuda_graph captures the training step on a GPU: needs CUDA")
    precision = runtime.resolve_precision(args.precision, device)
    log.info("precision: %s", precision.describe())
    trainable, frozen = count_parameters(build_ours(cfg))
    tflops = count_flops(cfg)
    paper = PAPER_TFLOPS.get((cfg.model.backbone.name, cfg.data.num_frames))
    report: dict[str, Any] = {
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
    base = {
        "experiment": args.experiment,
        "overrides": args.overrides,
        "device": args.device,
        "precision": precision.name,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "rounds": args.rounds,
        "reference_repo": str(args.reference_repo) if args.reference_repo else None,
        "keep_freed_memory": not args.default_allocator,
    }
    impls = [("ours", mode) for mode in args.modes]
    if args.reference_repo:
        impls.append(("reference", "default"))
    if args.full_finetune:
        impls.append(("finetune", "default"))
    for batch in args.batch_sizes:
        runs = {key: {"impl": key[0], "mode": key[1], "batch": batch, "step_times": [],
                      "backbone_times": []} for key in impls}  # fmt: skip
        for round_ in range(args.rounds):  # interleaved, so that drift hits all alike
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
        for (impl, mode), run in runs.items():
            run["step_s"] = statistics.median(run["step_times"])
            run["backbone_s"] = statistics.median(run["backbone_times"])
            peak = min(run.pop("peaks"))
            # Peak memory from one more child that times no floor (the reference's timing
            # children hold a copy of our tower for it); on the CPU with freed memory going
            # back to the OS at once. The timing children's peak stays as "rss" on the CPU.
            spec = {**base, "impl": impl, "mode": mode, "batch": batch, "what": "train",
                    "warmup": 1, "repeats": 1, "floor": False}  # fmt: skip
            if device.type == "cpu":
                run["rss_mb"] = peak
                run["peak_mb"] = run_child(spec, env=MMAP_ENV)["peak_mb"]
            else:
                run["peak_mb"] = run_child(spec)["peak_mb"]
            report["runs"].append(run)
    for impl, mode in impls:
        if mode == "cuda_graph":
            continue  # graphs replace the training step; inference runs as by default
        run = run_child({**base, "impl": impl, "mode": mode, "batch": 1, "what": "inference"})
        report.setdefault("inference", []).append(run)
    if args.breakdown:
        report["breakdown"] = []
        for batch in args.batch_sizes:
            for mode in args.modes:
                log.info("profiling ours/%s, batch %d", mode, batch)
                spec = {**base, "impl": "ours", "mode": mode, "batch": batch, "what": "breakdown"}
                report["breakdown"].append(breakdown_row(run_child(spec)))
    _derive(report)
    return report


def breakdown_row(child: dict[str, Any]) -> dict[str, Any]:
    """One ``--breakdown`` child as a flat row: the step and the tower's forward, and the
    side network's share (step minus tower) in units of the tower's forward."""
    from tdsclip.breakdown import side_share

    step, floor = child["step"], child["floor"]
    side = side_share(step, floor)
    return {
        "mode": child["mode"],
        "batch": child["batch"],
        "step_s": step["wall_s"],
        "backbone_s": floor["wall_s"],
        "vs_backbone": step["wall_s"] / floor["wall_s"],
        "side_matmul": side["matmul"],
        "side_optimizer": side["optimizer"],
        "side_other": side["other"],
        "side_gmac": side["gmac"],
        "side_gmac_per_s": side["gmac_per_s"],
        "backbone_gmac": floor["gmac"],
        "backbone_gmac_per_s": floor["gmac_per_s"],
        "step": step,
        "floor": floor,
    }


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


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on: CPU model, cores, GPU, library versions, and which
    tdsclip code (git commit, ``+dirty`` with uncommitted changes) was measured."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "cpu_cores": os.cpu_count(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "tdsclip": tdsclip.__version__,
        "tdsclip_revision": runtime.code_revision(),
    }


def _allocator(report: dict[str, Any]) -> str:
    if report.get("keep_freed_memory"):
        return "glibc keeping freed memory (trainer.cpu_keep_freed_memory), timed steps"
    return "default"


def _machine_line(report: dict[str, Any]) -> str:
    m = report.get("machine")
    if not m:
        return "machine not recorded"
    gpu = f", {m['gpu']}" if m.get("gpu") else ""
    line = f"{m['cpu']} ({m['cpu_cores']} cores{gpu}), torch {m['torch']}, Python {m['python']}"
    if m.get("tdsclip_revision"):
        sha, dirty, _ = m["tdsclip_revision"].partition("+dirty")
        line += f", tdsclip {sha[:12]}{dirty}"
    return line


_MARKDOWN_COLUMNS = [
    ("impl", "impl", "s"), ("mode", "mode", "s"), ("batch", "batch", "d"),
    ("step_s", "step s", ".3f"), ("clips_per_s", "clips/s", ".3f"),
    ("vs_backbone", "x backbone", ".2f"), ("peak_mb", "peak MB", ".0f"),
    ("mb_per_clip", "MB/clip", ".0f"),
    ("rss_mb_per_clip", "rss MB/clip", ".0f"), ("time_vs_reference", "time vs authors'", ".2f"),
    ("floor_time_vs_reference", "floor-read time vs authors'", ".2f"),
    ("mb_vs_reference", "MB/clip vs authors'", ".2f"),
    ("rss_mb_vs_reference", "rss vs authors'", ".2f"),
]  # fmt: skip


# The --breakdown table: (key, title, format).
_BREAKDOWN_COLUMNS = [
    ("mode", "mode", "s"), ("batch", "batch", "d"), ("step_s", "step s", ".3f"),
    ("backbone_s", "tower fwd s", ".3f"), ("vs_backbone", "x tower", ".2f"),
    ("side_matmul", "side matmul", ".2f"), ("side_optimizer", "side AdamW", ".2f"),
    ("side_other", "side rest", ".2f"), ("side_gmac", "side GMAC", ".1f"),
    ("side_gmac_per_s", "side GMAC/s", ".0f"), ("backbone_gmac", "tower GMAC", ".1f"),
    ("backbone_gmac_per_s", "tower GMAC/s", ".0f"),
]  # fmt: skip
_BREAKDOWN_NOTE = (
    "Breakdown (tdsclip.breakdown): one process per row, its steps and tower forwards timed "
    "alternately; the side network's time is the step minus the tower's forward, split into "
    "matrix products and AdamW (profiled self times) and the rest, in units of the tower's "
    "forward (they add up to 'x tower' - 1); GMAC/s = multiply-adds over matrix-product self "
    "time."
)


def _markdown_table(rows: list[dict[str, Any]], cols: list[tuple[str, str, str]]) -> list[str]:
    """A Markdown table of ``rows``; a column no row has a value for is left out."""
    cols = [c for c in cols if any(r.get(c[0]) is not None for r in rows)]
    lines = [
        "| " + " | ".join(title for _, title, _ in cols) + " |",
        "| " + " | ".join("---" if spec == "s" else "---:" for *_, spec in cols) + " |",
    ]
    for r in rows:
        cells = ["" if r.get(key) is None else format(r[key], spec) for key, _, spec in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _text_table(rows: list[dict[str, Any]], cols: list[tuple[str, str, str]]) -> list[str]:
    """Aligned columns: text left, numbers right; '-' where a row has no value."""
    table = [[title for _, title, _ in cols]]
    for r in rows:
        table.append(["-" if r.get(k) is None else format(r[k], spec) for k, _, spec in cols])
    widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
    lines = []
    for n, row in enumerate(table):
        cells = [
            cell.ljust(w) if spec == "s" else cell.rjust(w)
            for cell, w, (_, _, spec) in zip(row, widths, cols, strict=True)
        ]
        lines.append("  ".join(cells))
        if n == 0:
            lines.append("-" * len(lines[-1]))
    return lines


def format_markdown(report: dict[str, Any]) -> str:
    """The report as the Markdown table the README shows, with the machine it came from."""
    names = {"ours": "tdsclip", "reference": "authors'", "finetune": "full fine-tune"}
    lines = [
        f"Machine: {_machine_line(report)}; {report['threads']} threads, "
        f"{report['precision']}, experiment {report['experiment'] or 'default'}, "
        f"allocator {_allocator(report)}.",
        "",
    ]
    rows = [{**r, "impl": names.get(r["impl"], r["impl"])} for r in report["runs"]]
    lines += _markdown_table(rows, _MARKDOWN_COLUMNS)
    if report.get("breakdown"):
        table = _markdown_table(report["breakdown"], _BREAKDOWN_COLUMNS)
        lines += ["", _BREAKDOWN_NOTE, "", *table]
    return "\n".join(lines)


def format_report(report: dict[str, Any]) -> str:
    p, f = report["params"], report["tflops_per_view"]
    paper = f"{f['paper']:.1f}" if f["paper"] is not None else "n/a"
    lines = [
        f"experiment {report['experiment'] or 'default'} {' '.join(report['overrides'])}",
        f"machine {_machine_line(report)}",
        f"device {report['device']} ({report['threads']} threads), precision "
        f"{report['precision']}"
        + (f" ({report['precision_reason']})" if report.get("precision_reason") else ""),
        f"allocator {_allocator(report)}",
        f"parameters: trainable {p['trainable']:,}, frozen {p['frozen']:,}",
        f"TFLOPs per view (multiply-adds): ours {f['ours']:.3f}, paper {paper}",
        "",
    ]
    # (key, title, format); text columns are left-aligned, numbers right-aligned.
    cols = [
        ("impl", "impl", "s"), ("mode", "mode", "s"), ("batch", "batch", "d"),
        ("step_s", "step s", ".3f"), ("clips_per_s", "clips/s", ".3f"),
        ("backbone_s", "backbone s", ".3f"), ("vs_backbone", "x backbone", ".2f"),
        ("peak_mb", "peak MB", ".0f"), ("mb_per_clip", "MB/clip", ".0f"),
        ("saved_mb_per_clip", "saved MB/clip", ".0f"),
        ("time_vs_reference", "time vs ref", ".2f"),
        ("floor_time_vs_reference", "floor-read vs ref", ".2f"),
        ("mb_vs_reference", "MB/clip vs ref", ".2f"),
        ("rss_mb_per_clip", "rss MB/clip", ".0f"),
        ("rss_mb_vs_reference", "rss vs ref", ".2f"),
    ]  # fmt: skip
    lines += _text_table(report["runs"], cols)
    lines.append("")
    for r in report.get("inference", []):
        lines.append(
            f"inference {r['impl']}/{r['mode']}: {r['views']} views per video, "
            f"{r['video_s']:.3f} s per video, {r['clips_per_s']:.2f} clips/s"
        )
    if report.get("breakdown"):
        lines += ["", _BREAKDOWN_NOTE, *_text_table(report["breakdown"], _BREAKDOWN_COLUMNS)]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--experiment",
        default="ssv2_b16_8f",
        help="configs/experiment name; '' for the default job's tiny model",
    )
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2])
    parser.add_argument(
        "--modes",
        nargs="+",
        default=["default", "checkpointing"],
        choices=["default", "checkpointing", "compile", "cuda_graph"],
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--precision",
        default="auto",
        choices=list(runtime.PRECISIONS),
        help="auto (default): bf16 where the device computes it natively, as training picks",
    )
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per child")
    parser.add_argument(
        "--rounds", type=int, default=2, help="children per configuration, interleaved"
    )
    parser.add_argument(
        "--reference-repo",
        type=Path,
        default=None,
        help="local checkout of BBYL9413/TDS-CLIP to time beside ours",
    )
    parser.add_argument(
        "--full-finetune",
        action="store_true",
        help="also measure the same CLIP tower fully fine-tuned (frame-mean pooling, linear "
        "head): the memory and time that freezing the tower saves",
    )
    parser.add_argument(
        "--default-allocator",
        action="store_true",
        help="CPU: time with glibc's defaults instead of trainer.cpu_keep_freed_memory",
    )
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="CPU: also profile one child per mode and batch size: the step's and the "
        "tower's time in matrix products, the optimizer and the rest (tdsclip.breakdown)",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the report here")
    parser.add_argument(
        "--markdown", action="store_true", help="also print the table as Markdown (README)"
    )
    parser.add_argument(
        "--from-json",
        type=Path,
        default=None,
        help="print a saved report (from --json) instead of measuring",
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. data.num_frames=16")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        spec, out = json.loads(argv[1]), Path(argv[2])
        with contextlib.redirect_stdout(sys.stderr):
            result = child_measure(spec)
        out.write_text(json.dumps(result))
        return
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    report = json.loads(args.from_json.read_text()) if args.from_json else benchmark(args)
    sys.stdout.write(format_report(report) + "\n")
    if args.markdown:
        sys.stdout.write("\n" + format_markdown(report) + "\n")
    if args.json and not args.from_json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        log.info("wrote %s", args.json)


if __name__ == "__main__":
    main()
