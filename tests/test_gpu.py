"""The CUDA path: the same numbers as the CPU, fused attention, the options, the trainer.

Run with ``python -m pytest -m gpu`` on a machine with a CUDA device; skipped elsewhere.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import tiny_model, tiny_video
from test_model import _arch_kwargs
from test_train import compose_train, tiny_overrides

from tdsclip.convert import from_reference
from tdsclip.engine.cuda_graphs import capture_cuda_graphs
from tdsclip.engine.precision import amp_dtype, autocast

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
CUDA = torch.device("cuda")


@pytest.fixture(autouse=True)
def no_tf32():
    """Full fp32 products, so that CUDA and CPU agree to fp32 rounding."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _forward_backward(model, video, dtype=None):
    model.train()
    with torch.autocast(video.device.type, dtype=dtype, enabled=dtype is not None):
        out = model(video)
    out.float().square().sum().backward()
    grads = {n: p.grad.detach().cpu() for n, p in model.side.named_parameters()}
    return out.detach().float().cpu(), grads


def _assert_same(reference, candidate, atol, rtol):
    (out_a, grads_a), (out_b, grads_b) = reference, candidate
    torch.testing.assert_close(out_b, out_a, atol=atol, rtol=rtol)
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        torch.testing.assert_close(grads_b[name], grads_a[name], atol=atol, rtol=rtol, msg=name)


def test_reference_logits_on_cuda(reference):
    model = from_reference(reference["checkpoint"], **_arch_kwargs(reference["config"]))
    with torch.no_grad():
        logits = model.to(CUDA)(reference["video"].to(CUDA)).cpu()
    torch.testing.assert_close(logits, reference["logits"], atol=1e-4, rtol=0)


def test_cuda_matches_cpu_in_fp32():
    cpu_model = tiny_model()
    cuda_model = tiny_model().to(CUDA)
    video = tiny_video()
    _assert_same(
        _forward_backward(cpu_model, video),
        _forward_backward(cuda_model, video.to(CUDA)),
        atol=1e-4,
        rtol=1e-4,
    )


def test_bf16_step_uses_fused_attention_and_leaves_the_backbone_alone():
    model = tiny_model().to(CUDA)
    model.backbone.cast_weights(torch.bfloat16)
    video = tiny_video().to(CUDA)
    backbone = {p.untyped_storage().data_ptr() for p in model.backbone.parameters()}
    saved_from_backbone = []

    def pack(t):
        if t.untyped_storage().data_ptr() in backbone:
            saved_from_backbone.append(tuple(t.shape))
        return t

    with (
        torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof,
        torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t),
    ):
        out, grads = _forward_backward(model, video, torch.bfloat16)
    names = {e.name for e in prof.events()}
    assert any("scaled_dot_product" in n for n in names), sorted(names)
    assert saved_from_backbone == []
    assert all(p.grad is None for p in model.backbone.parameters())
    assert all(torch.isfinite(g).all() for g in grads.values())
    # bf16 against the fp32 model on the same weights: close, not equal.
    fp32 = tiny_model().to(CUDA)
    ref_out, _ = _forward_backward(fp32, video)
    torch.testing.assert_close(out, ref_out, atol=0.1, rtol=0.05)


@pytest.mark.parametrize("option", ["checkpointing", "compile"])
def test_speed_options_match_plain_on_cuda(option):
    plain, other = tiny_model().to(CUDA), tiny_model().to(CUDA)
    if option == "checkpointing":
        other.side.set_grad_checkpointing(True)
    else:
        other.side.compile_blocks(fullgraph=True)
    video = tiny_video().to(CUDA)
    _assert_same(
        _forward_backward(plain, video), _forward_backward(other, video), atol=1e-4, rtol=1e-4
    )


def _graph_step(model, video, dtype, cache):
    with autocast(video.device, dtype, cache=cache):
        out = model(video)
    out.float().square().sum().backward()
    grads = {n: p.grad.detach().cpu() for n, p in model.side.named_parameters()}
    model.side.zero_grad(set_to_none=True)
    return out.detach().float().cpu(), grads


@pytest.mark.parametrize("checkpointing", [False, True])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cuda_graphs_match_eager(precision, checkpointing):
    dtype = amp_dtype(precision)
    eager, graphed = tiny_model().to(CUDA), tiny_model().to(CUDA)
    for model in (eager, graphed):
        model.side.set_grad_checkpointing(checkpointing)
        if dtype is not None:
            model.backbone.cast_weights(dtype)
        model.train()
    first = tiny_video().to(CUDA)
    capture_cuda_graphs(graphed, torch.randn_like(first), dtype)
    for a, b in zip(eager.buffers(), graphed.buffers(), strict=True):
        torch.testing.assert_close(b, a)  # the capture's warm-up left no trace in BatchNorm
    tol = 1e-4 if dtype is None else 2e-2
    # Two different batches: the graph must read each one, not replay the capture's sample.
    for video in (first, torch.randn_like(first)):
        ref = _graph_step(eager, video, dtype, cache=True)
        got = _graph_step(graphed, video, dtype, cache=False)
        _assert_same(ref, got, atol=tol, rtol=tol)
    for a, b in zip(eager.buffers(), graphed.buffers(), strict=True):
        torch.testing.assert_close(b, a, atol=tol, rtol=tol)  # running statistics updated alike
    graphed.eval()  # eval mode runs the model as before, at any batch size
    with torch.no_grad(), autocast(CUDA, dtype):
        assert graphed(first[:1]).shape == (1, 5)


@pytest.mark.parametrize(
    ("precision", "cuda_graph"), [("bf16", False), ("fp16", False), ("bf16", True), ("fp16", True)]
)
def test_train_and_test_on_cuda(motion_root, tmp_path, precision, cuda_graph, caplog):
    from tdsclip.train import train

    overrides = {
        "trainer.device": "cuda",
        "trainer.epochs": 1,
        "trainer.precision": precision,
        "trainer.cuda_graph": cuda_graph,
        "trainer.test_after_train": True,
        "logger.tensorboard": False,
    }
    cfg = compose_train(tiny_overrides(motion_root, tmp_path, **overrides))
    with caplog.at_level("INFO", logger="tdsclip.train"):
        result = train(cfg, tmp_path / "run")
    assert result["status"] == "finished" and math.isfinite(result["val_top1"])
    assert ("captured as CUDA graphs" in caplog.text) == cuda_graph
    ckpt = Path(tmp_path / "run" / "checkpoints" / "last.pt")
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert (state["scaler"] is not None) == (precision == "fp16")


def test_benchmark_times_the_graphed_step(tmp_path):
    out = tmp_path / "bench.json"
    cmd = [sys.executable, "-m", "tdsclip.benchmark", "--experiment", "", "--batch-sizes", "2"]
    cmd += ["--warmup", "1", "--repeats", "2", "--modes", "cuda_graph", "--json", str(out)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    (row,) = json.loads(out.read_text())["runs"]
    assert row["mode"] == "cuda_graph" and math.isfinite(row["step_s"] + row["peak_mb"])
    assert row["saved_mb"] is None  # the graph's pool holds the activations
