"""One measurement in a fresh child process, and how the parent starts one.

``run_child(spec)`` runs ``python -m tdsclip.benchmark --child SPEC OUT`` and reads the
result back from ``OUT``; in that process ``child_main`` calls ``child_measure(spec)``, which
builds the implementation ``spec["impl"]`` (ours, the authors' reference or the full
fine-tune baseline) in ``spec["mode"]`` and measures ``spec["what"]``: ``train`` (step times
alternating with the floor's, peak memory, saved activations), ``breakdown`` (the same step
and floor through ``tdsclip.bench.breakdown.op_breakdown``) or ``inference`` (one video's
views). A process per measurement keeps the peak memory of one out of another's.
``MMAP_ENV`` is the environment of the CPU memory child, whose RSS follows the live tensors.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from tdsclip.bench.breakdown import op_breakdown
from tdsclip.bench.builders import (
    build_full_finetune,
    build_ours,
    build_reference,
    compose,
    floor_backbone,
    video_shape,
)
from tdsclip.engine.context import resolve_device
from tdsclip.engine.cuda_graphs import capture_cuda_graphs
from tdsclip.engine.memory import keep_freed_memory, peak_memory_mb
from tdsclip.engine.precision import amp_dtype, autocast

# glibc maps every block over 64 KiB on its own and unmaps it when freed: the RSS follows the
# live tensors.
MMAP_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536"}


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


@dataclass
class _Child:
    """One child's inputs, model and training step, filled in by the steps of
    ``child_measure``."""

    spec: dict[str, Any]
    cfg: Any
    device: torch.device
    dtype: torch.dtype | None
    video: torch.Tensor  # (B, T, M, 3, H, W)
    labels: torch.Tensor  # (B,)
    timing: bool  # a process that times steps (and the floor beside them)
    keeps_freed: bool
    model: torch.nn.Module | None = None
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None
    optimizer: torch.optim.Optimizer | None = None
    centre: torch.Tensor | None = None  # (BT, 3, H, W): the tower's input
    backbone: Any = None  # the floor, in timing processes

    @property
    def graphed(self) -> bool:
        # trainer.cuda_graph: autocast without its weight cache
        return self.spec["mode"] == "cuda_graph"

    def forward_loss(self) -> torch.Tensor:
        with autocast(self.device, self.dtype, cache=not self.graphed):
            logits = self.forward(self.video)
        return F.cross_entropy(logits.float(), self.labels)

    def train_step(self) -> None:
        self.forward_loss().backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def backbone_forward(self) -> None:
        with autocast(self.device, self.dtype):
            for _ in self.backbone.iter_layers(self.centre):
                pass

    def steps_and_floors(self) -> tuple[list[float], list[float]]:
        """Warm-up, then step and floor timed alternately, so that both see the same
        machine; the floor's first calls set up kernels too (cuBLAS on a GPU)."""
        fns = (
            [self.train_step] if self.backbone is None else [self.train_step, self.backbone_forward]
        )
        for _ in range(self.spec["warmup"]):
            for fn in fns:
                fn()
        times: list[list[float]] = [[], []]
        for _ in range(self.spec["repeats"]):
            for fn, seconds in zip(fns, times, strict=False):
                seconds += _timed(fn, self.device, 0, 1)
        return times[0], times[1]


def _prepare(spec: dict[str, Any]) -> _Child:
    """Seed, config, device, precision and the random clips; the allocator as training sets
    it in timing processes on the CPU."""
    torch.manual_seed(0)
    cfg = compose(spec["experiment"], spec["overrides"])
    device = resolve_device(spec["device"], 0)
    dtype = amp_dtype(spec["precision"])
    batch = spec["batch"]
    video = torch.randn(video_shape(cfg, batch), device=device)
    labels = torch.randint(0, cfg.model.num_classes, (batch,), device=device)
    timing = spec["what"] in ("train", "breakdown") and spec.get("floor", True)
    if timing and device.type == "cpu":
        # What `python -m tdsclip.train` does on the CPU (trainer.cpu_keep_freed_memory), for
        # every implementation alike; not in the memory child, whose allocator setting
        # makes its RSS follow the live tensors.
        keeps_freed = spec["keep_freed_memory"] and keep_freed_memory()
    else:
        keeps_freed = False
    return _Child(spec, cfg, device, dtype, video, labels, timing, keeps_freed)


def _build(child: _Child) -> None:
    """The implementation to measure, in training mode, and its optimizer."""
    spec, cfg, device, dtype = child.spec, child.cfg, child.device, child.dtype
    impl, mode = spec["impl"], spec["mode"]
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
        if child.graphed:
            # The graphs' private pool holds the step's activations; max-allocated sees that
            # pool only while the capture fills it, so a graphed step's peak counts from here
            # (the capture's eager warm-up steps included).
            torch.cuda.reset_peak_memory_stats(device)
            capture_cuda_graphs(model, child.video, dtype)
        forward = model
        params = list(model.side.parameters())
    child.model, child.forward = model, forward
    child.optimizer = torch.optim.AdamW(params, lr=1e-5, fused=True)  # the same for every impl


def _measure_breakdown(child: _Child) -> dict[str, Any]:
    steps, floors = child.steps_and_floors()
    repeats = child.spec["repeats"]
    return {
        "step": op_breakdown(child.train_step, repeats, statistics.median(steps)),
        "floor": op_breakdown(child.backbone_forward, repeats, statistics.median(floors)),
    }


def _measure_train(child: _Child) -> dict[str, Any]:
    if child.device.type == "cuda" and not child.graphed:
        torch.cuda.reset_peak_memory_stats(child.device)
    steps, floors = child.steps_and_floors()
    result = {
        "step_times": steps,
        "backbone_times": floors,
        "peak_mb": peak_memory_mb(child.device),
        # A graph keeps its activations in its own pool, out of saved-tensor hooks' sight.
        "saved_mb": None if child.graphed else _saved_activation_mb(child.forward_loss),
    }
    child.optimizer.zero_grad(set_to_none=True)
    return result


def _measure_inference(child: _Child) -> dict[str, Any]:
    cfg, device, dtype = child.cfg, child.device, child.dtype
    child.model.eval()
    views = cfg.data.test_clips * cfg.data.test_crops
    clips = torch.randn(video_shape(cfg, views), device=device)

    def infer() -> None:
        with torch.no_grad(), autocast(device, dtype):
            child.forward(clips).float().softmax(-1).mean(0)

    seconds = statistics.median(_timed(infer, device, child.spec["warmup"], child.spec["repeats"]))
    return {"views": views, "video_s": seconds, "clips_per_s": views / seconds}


_MEASURES = {
    "breakdown": _measure_breakdown,
    "train": _measure_train,
    "inference": _measure_inference,
}


def child_measure(spec: dict[str, Any]) -> dict[str, Any]:
    """One measurement in this (fresh) process; see ``run_child``."""
    child = _prepare(spec)
    _build(child)
    result: dict[str, Any] = {
        "impl": spec["impl"],
        "mode": spec["mode"],
        "batch": spec["batch"],
        "keep_freed_memory": child.keeps_freed,
    }
    child.centre = child.video[:, :, child.cfg.data.num_local_frames // 2].flatten(0, 1)
    if child.timing:
        # The floor, timed in every timing process (the reference's too, with our tower) so
        # that each step time can be read against the machine's speed at that moment.
        child.backbone = (
            child.model.backbone
            if spec["impl"] == "ours"
            else floor_backbone(child.cfg, child.device, child.dtype)
        )
    measure = _MEASURES.get(spec["what"])
    if measure is not None:
        result |= measure(child)
    return result


def child_main(spec_json: str, out: Path) -> None:
    """``--child SPEC OUT``: measure ``SPEC`` (JSON) and write the result to ``OUT``; the
    child's stdout goes to stderr, which the parent shows when the child fails."""
    spec = json.loads(spec_json)
    with contextlib.redirect_stdout(sys.stderr):
        result = child_measure(spec)
    out.write_text(json.dumps(result))


def run_child(spec: dict[str, Any], env: dict[str, str] | None = None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "tdsclip.benchmark", "--child", json.dumps(spec), str(out)]
        full_env = {**os.environ, **(env or {})}
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=full_env)
        if proc.returncode != 0 or not out.is_file():
            raise RuntimeError(f"benchmark child failed ({spec}):\n{proc.stderr[-4000:]}")
        return json.loads(out.read_text())
