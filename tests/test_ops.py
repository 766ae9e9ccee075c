"""The memory-lean autograd functions equal their plain compositions, and keep less."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tdsclip.models import ops
from tdsclip.models.ops import (
    batch_norm_linear,
    conv3d_taps,
    frozen_norm_linear,
    gelu_linear,
    layer_norm_in_dtype,
    patch_query_attention,
    sigmoid_gate,
    temporal_depthwise_conv,
)


def _saved_bytes(fn) -> int:
    seen: dict[int, int] = {}

    def pack(t):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    out.float().sum().backward()
    return sum(seen.values())


def _params(*shapes):
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(*s, generator=gen).requires_grad_(True) for s in shapes]


def test_frozen_norm_linear_fp32_is_exact():
    torch.manual_seed(0)  # unseeded, fp32 rounding passed 1e-4 in about 1 of 15 draws
    x = torch.randn(6, 11, 48) * 3 + 1  # frozen tokens: no grad
    nw, nb, w, b = _params((48,), (48,), (16, 48), (16,))
    out = frozen_norm_linear(x, nw, nb, w, b, 1e-5)
    ref = F.linear(F.layer_norm(x, (48,), nw, nb, 1e-5), w, b)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    grads = torch.autograd.grad(out.square().sum(), [nw, nb, w, b])
    ref_grads = torch.autograd.grad(ref.square().sum(), [nw, nb, w, b])
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, r, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="frozen"):
        frozen_norm_linear(x.requires_grad_(True), nw, nb, w, b, 1e-5)


def test_frozen_norm_linear_bf16_as_accurate_as_autocast():
    """Under bf16 autocast, its error against fp32 matches plain autocast's, while it keeps
    about half the bytes (a third on CUDA, where autocast runs LayerNorm in fp32)."""
    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(4, 197, 256, generator=gen) * 3 + 1).bfloat16()  # a bf16 backbone output
    nw = (torch.randn(256, generator=gen) * 0.5 + 1).requires_grad_(True)
    nb = (torch.randn(256, generator=gen) * 0.1).requires_grad_(True)
    w = (torch.randn(64, 256, generator=gen) * 0.05).requires_grad_(True)
    b = (torch.randn(64, generator=gen) * 0.1).requires_grad_(True)
    params = [nw, nb, w, b]

    def ours():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return frozen_norm_linear(x, nw, nb, w, b, 1e-5)

    def plain():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return F.linear(F.layer_norm(x, (256,), nw, nb, 1e-5), w, b)

    truth = F.linear(F.layer_norm(x.float(), (256,), nw, nb, 1e-5), w, b)
    truth_grads = torch.autograd.grad(truth.square().sum(), params)
    for fn in (ours, plain):
        out = fn()
        assert out.dtype == torch.bfloat16
        grads = torch.autograd.grad(out.float().square().sum(), params)
        err = (out.float() - truth).abs().mean().item()
        grad_err = [
            ((g - t).abs().mean() / t.abs().mean()).item()
            for g, t in zip(grads, truth_grads, strict=True)
        ]
        if fn is plain:
            plain_err, plain_grad_err = err, grad_err
        else:
            ours_err, ours_grad_err = err, grad_err
            assert all(g.dtype == torch.float32 for g in grads)
    assert ours_err <= 1.5 * plain_err + 1e-3
    for o, p in zip(ours_grad_err, plain_grad_err, strict=True):
        assert o <= 1.5 * p + 1e-2
    assert _saved_bytes(ours) * 1.7 < _saved_bytes(plain)


@pytest.mark.parametrize("amp", [False, True])
def test_gelu_linear(amp):
    (a0,) = _params((5, 7, 64))
    w, b = _params((16, 64), (16,))

    def run(fn):
        a = a0.detach().clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            out = fn(a * 1.5)
        grads = torch.autograd.grad(out.float().square().sum(), [a, w, b])
        return out, grads

    out, grads = run(lambda h: gelu_linear(h, w, b))
    ref, ref_grads = run(lambda h: F.linear(F.gelu(h), w, b))
    tol = dict(atol=5e-2, rtol=5e-2) if amp else dict(atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.float(), ref.float(), **tol)
    for g, r in zip(grads, ref_grads, strict=True):
        gtol = dict(atol=0.05 * r.abs().max().item(), rtol=0.05) if amp else tol
        torch.testing.assert_close(g, r, **gtol)
    h = torch.randn(5, 7, 64)
    assert _saved_bytes(lambda: gelu_linear(h.requires_grad_(True), w, b)) < _saved_bytes(
        lambda: F.linear(F.gelu(h.requires_grad_(True)), w, b)
    )


@pytest.mark.parametrize("amp", [False, True])
@pytest.mark.parametrize("bias", [True, False])
def test_batch_norm_linear_is_norm_then_linear(amp, bias):
    from tdsclip.models.layers import TokenBatchNorm

    torch.manual_seed(0)
    norms = [TokenBatchNorm(32), TokenBatchNorm(32)]
    linears = [torch.nn.Linear(32, 24, bias=bias), torch.nn.Linear(32, 24, bias=bias)]
    with torch.no_grad():  # non-trivial affine and running statistics, the same in both
        for module in (norms[0], linears[0]):
            for t in module.parameters():
                t.copy_(torch.randn_like(t))
        norms[0].running_mean.fill_(0.3)
    norms[1].load_state_dict(norms[0].state_dict())
    linears[1].load_state_dict(linears[0].state_dict())
    x0 = torch.randn(2, 4, 9, 32) * 2 + 0.5  # (B, T, N, C)
    dtype = torch.bfloat16 if amp else torch.float32

    def run(fn, norm, linear):
        x = x0.to(dtype).requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            out = fn(x, norm, linear)
        params = [x, *norm.parameters(), *linear.parameters()]
        return out, torch.autograd.grad(out.float().square().sum(), params)

    out, grads = run(batch_norm_linear, norms[0], linears[0])
    ref, ref_grads = run(lambda x, n, lin: lin(n(x)), norms[1], linears[1])
    assert out.dtype == ref.dtype
    torch.testing.assert_close(out, ref, atol=0, rtol=0)
    for g, r in zip(grads, ref_grads, strict=True):
        assert g.dtype == r.dtype
        torch.testing.assert_close(g, r, atol=1e-5, rtol=1e-5)
    for name, buffer in norms[1].named_buffers():  # running statistics updated once, alike
        torch.testing.assert_close(dict(norms[0].named_buffers())[name], buffer, atol=0, rtol=0)
    assert norms[0].num_batches_tracked.item() == 1

    def saved(fn, norm, linear):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            return _saved_bytes(lambda: fn(x0.to(dtype).requires_grad_(True), norm, linear))

    fused = saved(batch_norm_linear, norms[0], linears[0])
    plain = saved(lambda x, n, lin: lin(n(x)), norms[1], linears[1])
    assert plain - fused >= x0.numel() * x0.to(dtype).element_size()  # no normalised copy
    norms[0].eval()  # running statistics: the plain composition
    with torch.no_grad():
        torch.testing.assert_close(
            batch_norm_linear(x0, norms[0], linears[0]), linears[0](norms[0](x0))
        )


def test_sigmoid_gate():
    z, y = _params((4, 9), (4, 9))
    out = sigmoid_gate(z, y)
    ref = z + z * (torch.sigmoid(y) - 0.5)
    torch.testing.assert_close(out, ref)
    g = torch.autograd.grad(out.square().sum(), [z, y])
    r = torch.autograd.grad(ref.square().sum(), [z, y])
    for a, b in zip(g, r, strict=True):
        torch.testing.assert_close(a, b)
    assert torch.autograd.gradcheck(sigmoid_gate, (z.double(), y.double()))


def test_layer_norm_in_dtype_keeps_bf16_under_autocast():
    x = torch.randn(3, 5, 32, dtype=torch.bfloat16, requires_grad=True)
    w, b = _params((32,), (32,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer_norm_in_dtype(x, w, b, 1e-5)  # CUDA autocast would upcast a plain one
    ref = F.layer_norm(x.float(), (32,), w, b, 1e-5)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, atol=2e-2, rtol=2e-2)
    out.float().sum().backward()
    assert w.grad is not None and x.grad is not None


def _plain_patch_query_attention(qkv: torch.Tensor, num_heads: int) -> torch.Tensor:
    bt, length, three_d = qkv.shape
    qkv = qkv.view(bt, length, 3, num_heads, three_d // (3 * num_heads))
    q = qkv[:, 1:, 0].transpose(1, 2)  # patch queries only, as in the side network
    k, v = qkv[:, :, 1].transpose(1, 2), qkv[:, :, 2].transpose(1, 2)
    out = F.scaled_dot_product_attention(q, k, v)  # (BT, heads, N, hd)
    return out.transpose(1, 2).reshape(bt, length - 1, -1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_patch_query_attention_matches_sdpa(dtype):
    gen = torch.Generator().manual_seed(0)
    qkv0 = torch.randn(3, 11, 3 * 2 * 16, generator=gen).to(dtype)  # (BT, 1+N, 3d), 2 heads

    def run(fn):
        qkv = qkv0.clone().requires_grad_(True)
        out = fn(qkv, 2)
        (grad,) = torch.autograd.grad(out.float().square().sum(), qkv)
        return out, grad

    out, grad = run(patch_query_attention)
    ref_out, ref_grad = run(_plain_patch_query_attention)
    assert out.shape == (3, 10, 32)
    tol = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=3e-2, rtol=3e-2)
    torch.testing.assert_close(out, ref_out, **tol)
    torch.testing.assert_close(grad, ref_grad, **tol)
    assert grad.view(3, 11, 3, 32)[:, 0, 0].abs().max() == 0  # the class token never queries
    with torch.no_grad():
        torch.testing.assert_close(
            patch_query_attention(qkv0, 2), _plain_patch_query_attention(qkv0, 2)
        )
    if dtype == torch.float32:
        assert torch.autograd.gradcheck(
            lambda t: patch_query_attention(t, 2), (qkv0[:2, :5, :].double().requires_grad_(),)
        )


def test_bf16_scores_are_the_fp32_scores_and_the_flag_is_restored():
    """The attention scores on oneDNN's bf16 units, from bf16 inputs, are the fp32 path's:
    the same products, summed in fp32. The switch is set only for bf16 with a power-of-two
    scale, and restored afterwards, also when the matmul fails."""
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(4, 5, 196, 64, generator=gen).bfloat16()
    k = torch.randn(4, 5, 197, 64, generator=gen).bfloat16()
    flags = torch.backends.mkldnn.matmul
    before = flags.fp32_precision
    ref = q.double().mul(0.125).matmul(k.double().mT)
    q32, k32 = q.float().mul(0.125), k.float()
    with ops._exact_bf16_products(torch.bfloat16, 0.125):
        assert flags.fp32_precision == "bf16"
        fast = q32.matmul(k32.mT)
    plain = q32.matmul(k32.mT)
    assert flags.fp32_precision == before
    torch.testing.assert_close(fast, plain, rtol=2e-6, atol=2e-6)
    torch.testing.assert_close(fast.double(), ref, rtol=2e-6, atol=2e-6)
    for dtype, scale in ((torch.float16, 0.125), (torch.bfloat16, 80**-0.5), (torch.float32, 1)):
        with ops._exact_bf16_products(dtype, scale):
            assert flags.fp32_precision == before
    with pytest.raises(RuntimeError), ops._exact_bf16_products(torch.bfloat16, 0.125):
        torch.randn(2, 3).matmul(torch.randn(4, 5))
    assert flags.fp32_precision == before


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_conv3d_taps_is_the_permuted_weight(dtype):
    """The taps matrix is the weight permuted and cast; its gradient comes back in the
    weight's own dtype and contiguous layout, equal to plain autograd's."""
    (weight,) = _params((8, 6, 3, 4, 4))  # (d, C, k, P, P)
    taps = conv3d_taps(weight, dtype)
    ref = weight.permute(2, 0, 1, 3, 4).reshape(3 * 8, 6 * 16).to(dtype)
    assert taps.dtype == dtype
    assert torch.equal(taps, ref)
    g = torch.randn(taps.shape).to(dtype)
    (grad,) = torch.autograd.grad(taps, weight, g)
    (ref_grad,) = torch.autograd.grad(ref, weight, g)
    assert grad.dtype == torch.float32 and grad.is_contiguous()
    assert torch.equal(grad, ref_grad)


@pytest.mark.parametrize("scale", [0.5, 1.5, 2.5])
def test_patch_query_attention_bf16_as_accurate_as_sdpa(scale):
    """Against an fp64 reference, the bf16 CPU training path (fp32 scores, bf16 probabilities
    kept for backward) is about as accurate as bf16 SDPA's fused kernels in value, and within
    2.5x of them in gradient (its dP is rounded to bf16; the fused backward keeps it in fp32);
    at the side network's shapes: 5 heads of 64, 1+196 tokens."""
    gen = torch.Generator().manual_seed(0)
    qkv0 = (scale * torch.randn(2, 197, 3 * 320, generator=gen)).bfloat16()

    def run(fn, qkv0):
        qkv = qkv0.clone().requires_grad_(True)
        out = fn(qkv, 5)
        (grad,) = torch.autograd.grad(out.to(qkv0.dtype).square().sum(), qkv)
        return out.double(), grad.double()

    ref_out, ref_grad = run(_plain_patch_query_attention, qkv0.double())
    errors = {}
    for name, fn in (("ours", patch_query_attention), ("sdpa", _plain_patch_query_attention)):
        out, grad = run(fn, qkv0)
        errors[name] = (
            ((out - ref_out).norm() / ref_out.norm()).item(),
            ((grad - ref_grad).norm() / ref_grad.norm()).item(),
        )
    assert errors["ours"][0] <= 1.35 * errors["sdpa"][0], errors
    assert errors["ours"][1] <= 2.5 * errors["sdpa"][1], errors


@pytest.mark.parametrize(("kernel", "frames"), [(3, 8), (5, 4), (5, 2), (1, 3)])
def test_temporal_depthwise_conv_is_conv3d(kernel, frames):
    """The tokens-last op equals a depthwise Conv3d (k, 1, 1) with zero padding, in value and
    in every gradient, including a kernel longer than the clip."""
    gen = torch.Generator().manual_seed(0)
    channels, grid = 6, 3
    conv = torch.nn.Conv3d(
        channels, channels, (kernel, 1, 1), padding=(kernel // 2, 0, 0), groups=channels
    ).double()
    x = torch.randn(2, frames, grid * grid, channels, generator=gen, dtype=torch.float64)
    x.requires_grad_(True)
    weight = conv.weight.detach().view(channels, kernel).clone().requires_grad_(True)
    bias = conv.bias.detach().clone().requires_grad_(True)
    out = temporal_depthwise_conv(x, weight, bias)
    video = x.view(2, frames, grid, grid, channels).permute(0, 4, 1, 2, 3)  # (B, C, T, g, g)
    ref = conv(video).permute(0, 2, 3, 4, 1).reshape(out.shape)
    torch.testing.assert_close(out, ref)
    g = torch.randn(out.shape, generator=gen, dtype=torch.float64)
    grads = torch.autograd.grad(out, [x, weight, bias], g)
    ref_grads = torch.autograd.grad(ref, [x, conv.weight, conv.bias], g)
    for a, b in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(a, b.view(a.shape))
    x_small = x[:, :, :2].detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(temporal_depthwise_conv, (x_small, weight, None))
