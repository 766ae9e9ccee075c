"""The op breakdown counts the multiply-adds of matrix products and splits the time."""

from __future__ import annotations

import math

import pytest
import torch

from tdsclip.bench.breakdown import op_breakdown, side_share
from tdsclip.bench.flops import count_gmac


def test_op_breakdown_counts_matmuls_and_the_optimizer():
    a, b = torch.randn(128, 256), torch.randn(256, 128)
    weight = torch.nn.Parameter(torch.randn(128, 64))
    optimizer = torch.optim.AdamW([weight], fused=True)
    other = torch.randn(2**20)

    def step():
        # About a millisecond of work that is neither a matrix product nor the optimizer: on
        # microseconds alone, the profiler's own cost per operator could outweigh the rest.
        other.tanh()
        loss = (a @ b @ weight).relu().sum()  # 128*256*128 + 128*128*64 multiply-adds
        loss.backward()  # the weight's gradient: 128*128*64 more (no input needs one)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    parts = op_breakdown(step, repeats=3)
    assert parts["gmac"] * 1e9 == pytest.approx(128 * 256 * 128 + 2 * 128 * 128 * 64)
    # Measured times: only their existence and arithmetic are tested (under load the
    # remainder after the profiled operators can be negative).
    assert all(math.isfinite(parts[k]) for k in ("matmul_s", "optimizer_s", "other_s"))
    total = parts["matmul_s"] + parts["optimizer_s"] + parts["other_s"]
    assert total == pytest.approx(parts["wall_s"])
    assert parts["gmac_per_s"] == pytest.approx(parts["gmac"] / parts["matmul_s"])
    given = op_breakdown(step, repeats=1, wall_s=5.0)  # a wall time timed by the caller
    assert given["wall_s"] == 5.0
    assert given["other_s"] == pytest.approx(5.0 - given["matmul_s"] - given["optimizer_s"])
    with pytest.raises(ValueError, match="repeats"):
        op_breakdown(step, repeats=0)


def test_side_share_is_the_step_minus_the_floor_in_floor_units():
    floor = {"wall_s": 2.0, "matmul_s": 1.5, "optimizer_s": 0.0, "gmac": 300.0}
    step = {"wall_s": 4.0, "matmul_s": 2.9, "optimizer_s": 0.1, "gmac": 500.0}
    share = side_share(step, floor)
    assert share["matmul"] == pytest.approx(0.7)
    assert share["optimizer"] == pytest.approx(0.05)
    assert share["other"] == pytest.approx(0.25)
    assert share["matmul"] + share["optimizer"] + share["other"] == pytest.approx(4.0 / 2.0 - 1)
    assert share["gmac"] == pytest.approx(200.0)
    assert share["gmac_per_s"] == pytest.approx(200.0 / 1.4)


def test_count_gmac_sees_through_the_attention_fast_path():
    """nn.MultiheadAttention's inference fast path (one fused op) is counted in full: the
    in- and out-projections and both attention products; the switch is restored."""
    mha = torch.nn.MultiheadAttention(32, 4, batch_first=True).eval()
    x = torch.randn(2, 10, 32)  # (B, L, D)
    with torch.no_grad():
        gmac = count_gmac(lambda: mha(x, x, x, need_weights=False))
    expected = 2 * 10 * (4 * 32 * 32 + 2 * 10 * 32)  # per token: qkv + out, scores + values
    assert gmac * 1e9 == pytest.approx(expected)
    assert torch.backends.mha.get_fastpath_enabled()


def test_count_gmac_counts_cpu_attention_forward_and_backward():
    """scaled_dot_product_attention on the CPU flash kernels: both products (b h Lq Lk e
    each) forward; backward recomputes the scores and forms four more products."""
    q = torch.randn(2, 4, 10, 8, requires_grad=True)  # (B, h, L, e)
    k = torch.randn(2, 4, 12, 8, requires_grad=True)
    v = torch.randn(2, 4, 12, 8, requires_grad=True)
    product = 2 * 4 * 10 * 12 * 8
    forward = count_gmac(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v))
    assert forward * 1e9 == pytest.approx(2 * product)
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    backward = count_gmac(lambda: out.sum().backward())
    assert backward * 1e9 == pytest.approx(5 * product)


def test_count_gmac_of_the_frozen_tower_is_the_vit_formula():
    """Our CLIP tower, as the benchmark's FLOPs count runs it (eval, no grad, the attention
    fast path on): patch embedding, then per block the qkv, output and MLP projections and
    the two attention products, nothing left out."""
    from tdsclip.models import create_backbone

    tower = create_backbone(name=None, image_size=32, patch_size=8, width=64, layers=2, heads=2)
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        gmac = count_gmac(lambda: tower(images))
    n, d = 16, 64  # patches, width
    tokens = n + 1
    per_block = tokens * d * (3 * d + d + 2 * 4 * d) + 2 * tokens * tokens * d
    expected = 3 * (n * 3 * 8 * 8 * d + 2 * per_block)
    assert gmac * 1e9 == pytest.approx(expected)
