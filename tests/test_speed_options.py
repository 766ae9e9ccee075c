"""Speed and memory options change nothing numerically; the benchmark script runs."""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys

import pytest
import torch
from conftest import tiny_model, tiny_video

from tdsclip.engine.launch import code_revision
from tdsclip.models.layers import convert_sync_batchnorm


def _forward_backward(model, video):
    model.train()
    out = model(video)
    out.square().sum().backward()
    grads = {n: p.grad.clone() for n, p in model.side.named_parameters()}
    return out.detach(), grads


def _twin():
    a, b = tiny_model(), tiny_model()
    b.load_state_dict(a.state_dict())
    return a, b


def _assert_same(reference, candidate, atol=1e-5, rtol=1e-4):
    out_a, grads_a = reference
    out_b, grads_b = candidate
    torch.testing.assert_close(out_b, out_a, atol=atol, rtol=rtol)
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        torch.testing.assert_close(grads_b[name], grads_a[name], atol=atol, rtol=rtol, msg=name)


def test_activation_checkpointing_matches_plain():
    plain, checkpointed = _twin()
    checkpointed.side.set_grad_checkpointing(True)
    video = tiny_video()
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(
        lambda t: saved.append(t.numel()) or t, lambda t: t
    ):
        candidate = _forward_backward(checkpointed, video)
    checkpointed_saved = sum(saved)
    saved.clear()
    with torch.autograd.graph.saved_tensors_hooks(
        lambda t: saved.append(t.numel()) or t, lambda t: t
    ):
        reference = _forward_backward(plain, video)
    _assert_same(reference, candidate, atol=1e-6, rtol=1e-5)
    assert checkpointed_saved < sum(saved) / 2  # it does keep less
    # The recomputation in backward must not update the BatchNorm statistics a second time.
    plain_buffers = dict(plain.side.named_buffers())
    for name, buffer in checkpointed.side.named_buffers():
        torch.testing.assert_close(buffer, plain_buffers[name], atol=1e-6, rtol=1e-5, msg=name)
    counts = [b for n, b in checkpointed.side.named_buffers() if n.endswith("num_batches_tracked")]
    assert counts and all(int(c) == 1 for c in counts)


def test_compiled_blocks_match_plain():
    plain, compiled = _twin()
    # fullgraph: a graph break (e.g. around the attention) would silently cost the speed-up.
    compiled.side.compile_blocks(fullgraph=True)
    video = tiny_video()
    _assert_same(_forward_backward(plain, video), _forward_backward(compiled, video))


def test_sync_batchnorm_conversion_keeps_state_and_layout():
    model = tiny_model().eval()
    video = tiny_video()
    with torch.no_grad():
        before = model(video)
    model.side = convert_sync_batchnorm(model.side)
    kinds = {type(m).__name__ for m in model.side.modules()}
    assert "TokenSyncBatchNorm" in kinds and "TokenBatchNorm" not in kinds
    with torch.no_grad():  # eval mode: running statistics, no process group needed
        torch.testing.assert_close(model(video), before)


def test_benchmark_script_on_the_tiny_model(tmp_path):
    out = tmp_path / "bench.json"
    cmd = [
        sys.executable,
        "-m",
        "tdsclip.benchmark",
        "--experiment",
        "",
        "--batch-sizes",
        "1",
        "2",
        "--warmup",
        "0",
        "--repeats",
        "1",
        "--rounds",
        "1",
        "--modes",
        "default",
        "checkpointing",
        "--breakdown",
        "--json",
        str(out),
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "TFLOPs per view" in run.stdout and "x backbone" in run.stdout
    report = json.loads(out.read_text())
    assert report["params"]["trainable"] > 0 and report["tflops_per_view"]["ours"] > 0
    runs = {(r["mode"], r["batch"]): r for r in report["runs"] if r["impl"] == "ours"}
    assert set(runs) == {(m, b) for m in ("default", "checkpointing") for b in (1, 2)}
    for r in runs.values():
        assert all(math.isfinite(r[k]) for k in ("step_s", "backbone_s", "peak_mb"))
    # Checkpointing keeps fewer activations per extra clip.
    assert (
        runs[("checkpointing", 2)]["saved_mb_per_clip"] < runs[("default", 2)]["saved_mb_per_clip"]
    )
    inference = {(r["impl"], r["mode"]) for r in report["inference"]}
    assert inference == {("ours", "default"), ("ours", "checkpointing")}
    assert report["machine"]["cpu_cores"] >= 1 and report["machine"]["torch"] == torch.__version__
    assert report["machine"]["tdsclip_revision"] == code_revision()
    # Timed like `python -m tdsclip.train` runs on the CPU: freed memory kept (glibc).
    glibc = platform.libc_ver()[0] == "glibc"
    assert report["keep_freed_memory"] is True
    assert all(r["keep_freed_memory"] is glibc for r in report["runs"])

    # The breakdown: the side network's share adds up to the step over the tower; its
    # multiply-adds double with the batch (but for a few batch-independent matrix-vector
    # products on weights), and checkpointing recomputes block forwards.
    parts = {(r["mode"], r["batch"]): r for r in report["breakdown"]}
    assert set(parts) == set(runs)
    for r in parts.values():
        assert math.isfinite(r["side_matmul"]) and math.isfinite(r["side_optimizer"])
        assert r["backbone_gmac"] > 0  # a count, not a measurement
        total = r["side_matmul"] + r["side_optimizer"] + r["side_other"]
        assert total == pytest.approx(r["vs_backbone"] - 1, abs=1e-9)
    for mode in ("default", "checkpointing"):
        double = 2 * parts[(mode, 1)]["side_gmac"]
        assert parts[(mode, 2)]["side_gmac"] == pytest.approx(double, rel=1e-3)
    assert parts[("checkpointing", 1)]["side_gmac"] > parts[("default", 1)]["side_gmac"]
    assert "side GMAC/s" in run.stdout

    # A saved report renders again, as text and as the README's Markdown table.
    cmd = [sys.executable, "-m", "tdsclip.benchmark", "--from-json", str(out), "--markdown"]
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert again.returncode == 0, again.stderr[-3000:]
    rows = [line for line in again.stdout.splitlines() if line.startswith("| tdsclip |")]
    assert len(rows) == 4
    step = runs[("default", 2)]["step_s"]
    assert any(f"| default | 2 | {step:.3f} |" in row for row in rows)
    assert "Machine: " + report["machine"]["cpu"] in again.stdout
    assert "| mode | batch | step s | tower fwd s |" in again.stdout


@pytest.mark.slow
def test_benchmark_measures_the_full_finetune_baseline(tmp_path):
    """--full-finetune adds the fully fine-tuned tower's rows (its own child processes)."""
    out = tmp_path / "bench.json"
    cmd = [sys.executable, "-m", "tdsclip.benchmark", "--experiment", "", "--batch-sizes", "1",
           "2", "--warmup", "0", "--repeats", "1", "--rounds", "1", "--modes", "default",
           "--full-finetune", "--json", str(out)]  # fmt: skip
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(out.read_text())
    finetune = [r for r in report["runs"] if r["impl"] == "finetune"]
    assert [r["batch"] for r in finetune] == [1, 2] and math.isfinite(finetune[1]["mb_per_clip"])
    assert {(r["impl"], r["mode"]) for r in report["inference"]} == {
        ("ours", "default"),
        ("finetune", "default"),
    }
    cmd = [sys.executable, "-m", "tdsclip.benchmark", "--from-json", str(out), "--markdown"]
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    lines = again.stdout.splitlines()
    assert sum(line.startswith("| full fine-tune | default |") for line in lines) == 2


def test_benchmark_cuda_graph_mode_needs_a_gpu():
    from tdsclip.bench.cli import parse_args
    from tdsclip.bench.runner import benchmark

    args = parse_args(["--experiment", "", "--device", "cpu", "--modes", "cuda_graph"])
    with pytest.raises(ValueError, match="needs CUDA"):
        benchmark(args)


def test_full_finetune_baseline_trains_the_whole_tower_on_centre_frames():
    from tdsclip.bench.builders import build_full_finetune, compose

    cfg = compose("", [])
    model, forward = build_full_finetune(cfg)
    d = cfg.data
    video = torch.randn(2, d.num_frames, d.num_local_frames, 3, d.input_size, d.input_size)
    logits = forward(video)
    assert logits.shape == (2, cfg.model.num_classes)
    logits.logsumexp(-1).sum().backward()
    assert all(p.requires_grad and p.grad is not None for p in model.parameters())
    # Each segment contributes its centre frame only, as our model's tower input.
    other = video.clone()
    other[:, :, 0] += 1.0
    with torch.no_grad():
        torch.testing.assert_close(forward(other), forward(video), atol=0, rtol=0)
        other[:, :, d.num_local_frames // 2] += 1.0
        assert not torch.allclose(forward(other), forward(video))


@pytest.mark.skipif(
    not os.environ.get("TDSCLIP_REFERENCE_REPO"),
    reason="set TDSCLIP_REFERENCE_REPO to a local checkout of BBYL9413/TDS-CLIP",
)
def test_benchmark_times_the_authors_model_beside_ours(tmp_path):
    out = tmp_path / "bench.json"
    repo = os.environ["TDSCLIP_REFERENCE_REPO"]
    cmd = [sys.executable, "-m", "tdsclip.benchmark", "--experiment", "", "--batch-sizes", "1",
           "2", "--warmup", "0", "--repeats", "1", "--rounds", "1", "--modes", "default",
           "--reference-repo", repo, "--json", str(out)]  # fmt: skip
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    runs = {(r["impl"], r["batch"]): r for r in json.loads(out.read_text())["runs"]}
    assert set(runs) == {(i, b) for i in ("ours", "reference") for b in (1, 2)}
    for r in runs.values():  # every process timed its own floor
        assert len(r["backbone_times"]) == 1 and r["backbone_s"] > 0
    ours, ref = runs[("ours", 2)], runs[("reference", 2)]
    assert ref["time_vs_reference"] == 1.0 and ref["mb_vs_reference"] == 1.0
    assert ours["time_vs_reference"] == pytest.approx(ours["step_s"] / ref["step_s"])
    assert ours["floor_time_vs_reference"] == pytest.approx(
        ours["vs_backbone"] / ref["vs_backbone"]
    )
