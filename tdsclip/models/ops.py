"""Lean autograd functions for the side network's hot path.

Each computes what its plain PyTorch composition computes (the tests compare values and
gradients) but keeps less for backward, or does less work in it:

- ``frozen_norm_linear``: LayerNorm + Linear of frozen backbone tokens. Plain autograd keeps
  the LayerNorm's input (fp32 under CUDA autocast) *and* its bf16 output; no gradient ever
  flows into the frozen tokens, so only the normalised tokens in the compute dtype are kept
  (half the bytes on CPU, a third on CUDA). The LayerNorm's affine is folded into the Linear's
  weight and bias, so no (tokens, D) LayerNorm output is ever formed; the backward needs one
  matmul, not two: the affine gradients follow from the weight-gradient product.
- ``gelu_linear``: GELU then Linear, keeping only the GELU input; the GELU output that the
  Linear's weight gradient needs is recomputed (a pointwise op) instead of stored.
- ``batch_norm_linear``: a training-mode BatchNorm then Linear, keeping only the BatchNorm's
  input (which its own backward needs anyway); the normalised tokens that the Linear's weight
  gradient needs are recomputed from it in backward, bit for bit, instead of stored; the
  recomputation also gives the batch statistics that BatchNorm's backward kernel takes, which
  is called directly (no nested autograd pass).
- ``sigmoid_gate``: ``z + z * (sigmoid(y) - 0.5)`` keeping ``z`` and ``sigmoid(y)`` only.
- ``layer_norm_in_dtype``: LayerNorm that, under autocast, runs on the bf16/fp16 activations
  (accumulating in fp32 inside the kernel) instead of on the fp32 copy CUDA autocast makes
  (CPU autocast already keeps LayerNorm in bf16).
- ``patch_query_attention``: attention of the patch queries straight from the stacked qkv
  projection; for CPU training, fp32 scores and bf16/fp16 probabilities kept for a backward
  that recomputes nothing and returns one qkv gradient buffer.
- ``temporal_depthwise_conv``: the (k, 1, 1) depthwise Conv3d on tokens-last input as
  shifted multiply-adds, with no padded copy of the input.
- ``conv3d_taps``: a (d, C, k, P, P) Conv3d weight as the (k*d, C*P*P) matrix of its temporal
  taps in the compute dtype, in one copy each way (plain autograd: a permuted copy, a cast,
  and in backward a cast and one more copy into the parameter's layout).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor


def compute_dtype(x: Tensor) -> torch.dtype:
    """The autocast dtype when autocast is on for x's device, else x's own dtype."""
    device = x.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return x.dtype


class _FrozenNormLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, norm_weight, norm_bias, weight, bias, eps, dtype):
        with torch.autocast(x.device.type, enabled=False):
            # The kernel accumulates in fp32 whatever the input dtype; no fp32 copy of x.
            xhat = F.layer_norm(x.to(dtype), x.shape[-1:], eps=eps)  # (..., D)
            # The LayerNorm's affine folded into the Linear (tiny tensors, in fp32):
            # (xhat gamma + beta) W^T + b = xhat (W gamma)^T + (W beta + b).
            w = weight.float()
            folded_w = (w * norm_weight.float()).to(dtype)  # (d, D)
            folded_b = torch.addmv(bias.float(), w, norm_bias.float()).to(dtype)  # (d,)
            out = F.linear(xhat, folded_w, folded_b)  # (..., d)
        ctx.save_for_backward(xhat, norm_weight, norm_bias, weight)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        xhat, norm_weight, norm_bias, weight = ctx.saved_tensors
        dtype = xhat.dtype
        with torch.autocast(grad_out.device.type, enabled=False):
            g = grad_out.to(dtype).reshape(-1, grad_out.shape[-1])  # (tokens, d)
            xh = xhat.reshape(-1, xhat.shape[-1])  # (tokens, D)
            # With h = xhat * gamma + beta and out = h W^T + b, every gradient follows from
            # m = g^T xhat (the one big matmul, the shape of W):
            #   dW = m * gamma + db beta^T,  dgamma = sum_j W * m,  dbeta = db W.
            # No (tokens, D) gradient of the LayerNorm output is ever formed.
            m = g.t().mm(xh).float()  # (d, D)
            grad_bias = g.sum(0).float()  # (d,); the kernel accumulates in fp32
            w = weight.float()
            grad_weight = torch.addr(m * norm_weight.float(), grad_bias, norm_bias.float())
            grad_norm_weight = (m * w).sum(0)  # (D,)
            grad_norm_bias = grad_bias @ w  # (D,)
        return (
            None,
            grad_norm_weight.to(norm_weight.dtype),
            grad_norm_bias.to(norm_bias.dtype),
            grad_weight.to(weight.dtype),
            grad_bias.to(weight.dtype),
            None,
            None,
        )


def frozen_norm_linear(
    x: Tensor, norm_weight: Tensor, norm_bias: Tensor, weight: Tensor, bias: Tensor, eps: float
) -> Tensor:
    """``linear(layer_norm(x))`` for an input that never needs a gradient: (..., D) -> (..., d)."""
    if x.requires_grad:
        raise ValueError("frozen_norm_linear is for frozen features (no gradient into x)")
    return _FrozenNormLinear.apply(x, norm_weight, norm_bias, weight, bias, eps, compute_dtype(x))


class _GeluLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, weight, bias, dtype):
        ctx.input_dtype, ctx.weight_dtype = a.dtype, weight.dtype
        with torch.autocast(a.device.type, enabled=False):
            a = a.to(dtype)
            w = weight.to(dtype)  # kept for backward: one cast per step, not two
            out = F.linear(F.gelu(a), w, bias.to(dtype))
        ctx.save_for_backward(a, w)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        a, w = ctx.saved_tensors
        with torch.autocast(grad_out.device.type, enabled=False):
            go = grad_out.to(a.dtype).reshape(-1, grad_out.shape[-1])  # (tokens, d)
            g = F.gelu(a).reshape(-1, a.shape[-1])  # recomputed, (tokens, 4d)
            grad_weight = go.t().mm(g)  # (d, 4d)
            grad_bias = go.sum(0)  # the kernel accumulates in fp32
            grad_g = go.mm(w).view(a.shape)  # (..., 4d)
            grad_a = torch.ops.aten.gelu_backward(grad_g, a)
        return (
            grad_a.to(ctx.input_dtype),
            grad_weight.to(ctx.weight_dtype),
            grad_bias.to(ctx.weight_dtype),
            None,
        )


def gelu_linear(a: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """``linear(gelu(a))`` keeping only ``a`` for backward: (..., 4d) -> (..., d)."""
    return _GeluLinear.apply(a, weight, bias, compute_dtype(a))


class _BatchNormLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, norm_weight, norm_bias, weight, bias, norm, dtype):
        # The module itself, in training mode: batch statistics, running statistics updated
        # once, exactly as ``norm(x)``.
        a = norm(x)  # (..., C)
        ctx.weight_dtype, ctx.eps = weight.dtype, norm.eps
        with torch.autocast(x.device.type, enabled=False):
            w = weight.to(dtype)  # kept for backward: one cast per step, not two
            out = F.linear(a.to(dtype), w, None if bias is None else bias.to(dtype))
        ctx.save_for_backward(x, norm_weight, norm_bias, w)
        ctx.has_bias = bias is not None
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, norm_weight, norm_bias, w = ctx.saved_tensors
        x2 = x.reshape(-1, x.shape[-1])  # (tokens, C)
        with torch.autocast(x.device.type, enabled=False):
            # The forward's batch normalisation again (same input, same kernel: the same
            # values and batch statistics), with no running statistics to update.
            a, mean, invstd = torch.native_batch_norm(
                x2, norm_weight, norm_bias, None, None, True, 0.0, ctx.eps
            )  # (tokens, C) in x's dtype; (C,), (C,) in fp32
            go = grad_out.to(w.dtype).reshape(-1, grad_out.shape[-1])  # (tokens, d)
            grad_weight = go.t().mm(a.to(w.dtype))  # (d, C)
            grad_bias = go.sum(0) if ctx.has_bias else None  # the kernel accumulates in fp32
            grad_a = go.mm(w).to(a.dtype)  # (tokens, C)
            grad_x, grad_norm_weight, grad_norm_bias = torch.ops.aten.native_batch_norm_backward(
                grad_a, x2, norm_weight, None, None, mean, invstd, True, ctx.eps, [True, True, True]
            )
        return (
            grad_x.view(x.shape),
            grad_norm_weight,
            grad_norm_bias,
            grad_weight.to(ctx.weight_dtype),
            None if grad_bias is None else grad_bias.to(ctx.weight_dtype),
            None,
            None,
        )


def batch_norm_linear(x: Tensor, norm: torch.nn.Module, linear: torch.nn.Linear) -> Tensor:
    """``linear(norm(x))`` for a tokens-last BatchNorm (``TokenBatchNorm``): (..., C) -> (..., d).

    In training with autograd, only ``x`` is kept for backward (see ``_BatchNormLinear``).
    Otherwise, and for a SyncBatchNorm, a norm without affine parameters or under
    ``torch.compile`` (whose partitioner decides what to keep), the plain composition.
    """
    fused = (
        norm.training
        and isinstance(norm, torch.nn.BatchNorm1d)
        and norm.affine
        and torch.is_grad_enabled()
        and x.requires_grad
        and not torch.compiler.is_compiling()
    )
    if not fused:
        return linear(norm(x))
    return _BatchNormLinear.apply(
        x, norm.weight, norm.bias, linear.weight, linear.bias, norm, compute_dtype(x)
    )


class _SigmoidGate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z, y):
        s = torch.sigmoid(y)
        ctx.save_for_backward(z, s)
        return torch.addcmul(z, z, s - 0.5)

    @staticmethod
    def backward(ctx, grad_out):
        z, s = ctx.saved_tensors
        grad_z = torch.addcmul(grad_out, grad_out, s - 0.5)  # grad (s + 0.5)
        grad_y = torch.addcmul(s, s, s, value=-1.0).mul_(z).mul_(grad_out)  # grad z s (1-s)
        return grad_z, grad_y


def sigmoid_gate(z: Tensor, y: Tensor) -> Tensor:
    """``z + z * (sigmoid(y) - 0.5)`` keeping only ``z`` and ``sigmoid(y)``."""
    if y.dtype != z.dtype:
        y = y.to(z.dtype)
    return _SigmoidGate.apply(z, y)


def layer_norm_in_dtype(x: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
    """LayerNorm in the activations' own dtype, even under autocast (fp32 accumulation)."""
    if not torch.is_autocast_enabled(x.device.type) or x.dtype == torch.float32:
        return F.layer_norm(x, x.shape[-1:], weight, bias, eps)
    with torch.autocast(x.device.type, enabled=False):
        return F.layer_norm(x, x.shape[-1:], weight.to(x.dtype), bias.to(x.dtype), eps)


class _PatchQueryAttentionCPU(torch.autograd.Function):
    """Multi-head attention of the patch queries over all tokens, straight from the stacked
    qkv projection, for CPU training. The forward computes the scores in fp32 (the products
    of bf16/fp16 inputs are exact there, as inside ``scaled_dot_product_attention``), the
    softmax in fp32, and the value product with the probabilities in the compute dtype, which
    it keeps for backward: the backward then needs no recomputation of scores or softmax and
    uses the very probabilities of the forward. It writes the q, k and v gradients into one
    (BT, 1+N, 3d) buffer, so that autograd never zero-fills and sums three sliced gradients.
    PyTorch's CPU flash-attention backward is several times slower than this for the side
    network's shapes."""

    @staticmethod
    def forward(ctx, qkv, num_heads):
        q, k, v = _split_qkv(qkv, num_heads)  # (BT, h, N, hd), (BT, h, 1+N, hd) x 2
        hd = q.shape[-1]
        scale = hd**-0.5
        acc = torch.promote_types(qkv.dtype, torch.float32)
        # Contiguous bf16/fp16 operands that backward reuses as they are (saved instead of
        # qkv, in the same bytes): no second copy of k, v and the scaled q there.
        k, v = k.contiguous(), v.contiguous()  # (BT, h, 1+N, hd)
        q32 = torch.mul(q, scale, out=q.new_empty(q.shape, dtype=acc))  # (BT, h, N, hd)
        with _exact_bf16_products(qkv.dtype, scale):
            scores = q32.matmul(k.to(acc).mT)  # (BT, h, N, 1+N), fp32
        probs = torch.softmax(scores, dim=-1).to(qkv.dtype)  # (BT, h, N, 1+N)
        # No strided ``out=`` for the heads' merge: torch.compile cannot trace one (the block
        # would split around the attention), and it saves no time here.
        out = probs.matmul(v)  # (BT, h, N, hd)
        ctx.scale = scale
        ctx.save_for_backward(q32.to(qkv.dtype), k, v, probs)
        return _merge_heads(out)  # (BT, N, d)

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, probs = ctx.saved_tensors  # q scaled; all contiguous
        bt, heads, n, hd = q.shape
        # Contiguous operands once, so that no batched matmul below copies its inputs.
        go = _split_heads(grad_out.to(q.dtype), heads).contiguous()  # (BT, h, N, hd)
        grad_qkv = q.new_empty(bt, n + 1, 3, heads, hd)
        grad_q, grad_k, grad_v = (grad_qkv[:, :, i].transpose(1, 2) for i in range(3))
        grad_v.copy_(probs.mT.matmul(go))  # (BT, h, 1+N, hd)
        grad_probs = go.matmul(v.mT)  # (BT, h, N, 1+N)
        # probs * (grad_probs - sum(probs * grad_probs)): the softmax backward, one kernel.
        grad_scores = torch._softmax_backward_data(grad_probs, probs, -1, probs.dtype)
        grad_k.copy_(grad_scores.mT.matmul(q))  # (BT, h, 1+N, hd)
        grad_q[:, :, 1:].copy_(grad_scores.matmul(k).mul_(ctx.scale))  # (BT, h, N, hd)
        grad_q[:, :, 0].zero_()  # the class token does not query
        return grad_qkv.view(bt, n + 1, -1), None


@contextlib.contextmanager
def _exact_bf16_products(dtype: torch.dtype, scale: float) -> Iterator[None]:
    """Let oneDNN run an fp32 CPU matmul on its bf16 units when that changes no product.

    With ``torch.backends.mkldnn.matmul.fp32_precision = "bf16"`` oneDNN rounds the fp32
    inputs to bf16 and accumulates in fp32. Inputs that are bf16 values (times a power of
    two) round to themselves, so every product and the fp32 sums are those of the fp32
    path, at about 1.4x its speed for the attention scores. Anything else: unchanged.
    """
    flags = torch.backends.mkldnn.matmul
    exact = dtype == torch.bfloat16 and math.log2(scale).is_integer()
    if not exact or torch.compiler.is_compiling() or flags.fp32_precision == "bf16":
        yield
        return
    previous = flags.fp32_precision
    flags.fp32_precision = "bf16"
    try:
        yield
    finally:
        flags.fp32_precision = previous


def _split_heads(x: Tensor, num_heads: int) -> Tensor:
    """(BT, n, d) -> (BT, h, n, hd) view."""
    return x.unflatten(-1, (num_heads, -1)).transpose(1, 2)


def _merge_heads(x: Tensor) -> Tensor:
    """(BT, h, n, hd) -> (BT, n, d)."""
    return x.transpose(1, 2).flatten(2)


def _split_qkv(qkv: Tensor, num_heads: int) -> tuple[Tensor, Tensor, Tensor]:
    """Views of a stacked (BT, 1+N, 3d) projection: patch queries (BT, h, N, hd), keys and
    values (BT, h, 1+N, hd)."""
    bt, length, three_d = qkv.shape
    qkv = qkv.view(bt, length, 3, num_heads, three_d // (3 * num_heads))
    q = qkv[:, 1:, 0].transpose(1, 2)
    return q, qkv[:, :, 1].transpose(1, 2), qkv[:, :, 2].transpose(1, 2)


def patch_query_attention(qkv: Tensor, num_heads: int) -> Tensor:
    """Attention in which only the patch tokens query: (BT, 1+N, 3d) -> (BT, N, d).

    ``qkv`` stacks queries, keys and values as nn.MultiheadAttention's in_proj does. The
    result is ``scaled_dot_product_attention`` (no mask, default scale) over all 1+N keys
    for the N patch queries. On CUDA, and without autograd, that call runs fused; CPU
    training keeps the probabilities for a faster backward (see ``_PatchQueryAttentionCPU``).
    """
    if qkv.device.type == "cpu" and torch.is_grad_enabled() and qkv.requires_grad:
        return _PatchQueryAttentionCPU.apply(qkv, num_heads)
    out = F.scaled_dot_product_attention(*_split_qkv(qkv, num_heads))  # (BT, h, N, hd)
    return _merge_heads(out)


class _TemporalDepthwiseConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias):
        taps = weight.t().to(x.dtype).contiguous()  # (k, C): contiguous rows broadcast fast
        centre = taps.shape[0] // 2
        # (B, T, N, C): the centre tap (plus bias), then the shifted taps added in place
        out = x * taps[centre] if bias is None else torch.addcmul(bias.to(x.dtype), x, taps[centre])
        for j, (dst, src) in _time_shifts(x.shape[1], taps.shape[0]):
            out[:, dst].addcmul_(x[:, src], taps[j])
        ctx.has_bias, ctx.weight_dtype = bias is not None, weight.dtype
        ctx.save_for_backward(x, taps)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, taps = ctx.saved_tensors
        grad_out = grad_out.to(x.dtype)
        centre = taps.shape[0] // 2
        dims, acc = (0, 1, 2), torch.promote_types(x.dtype, torch.float32)  # C-sized results
        grad_x = grad_taps = None
        if ctx.needs_input_grad[0]:
            grad_x = grad_out * taps[centre]
            for j, (dst, src) in _time_shifts(x.shape[1], taps.shape[0]):
                grad_x[:, src].addcmul_(grad_out[:, dst], taps[j])
        if ctx.needs_input_grad[1]:
            grad_taps = x.new_zeros(taps.shape, dtype=acc)  # (k, C)
            grad_taps[centre] = (grad_out * x).sum(dims)
            for j, (dst, src) in _time_shifts(x.shape[1], taps.shape[0]):
                grad_taps[j] = (grad_out[:, dst] * x[:, src]).sum(dims)
            grad_taps = grad_taps.t().to(ctx.weight_dtype)  # (C, k)
        grad_bias = None
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad_out.sum(dims).to(ctx.weight_dtype)
        return grad_x, grad_taps, grad_bias


def _time_shifts(num_frames: int, kernel_size: int) -> list[tuple[int, tuple[slice, slice]]]:
    """(tap j, (output frames, input frames)) of the off-centre taps of a temporal kernel with
    zero padding: output frame t sees input frame t + j - k // 2."""
    centre, shifts = kernel_size // 2, []
    for j in range(kernel_size):
        s = j - centre
        if s == 0 or abs(s) >= num_frames:
            continue
        if s > 0:
            shifts.append((j, (slice(0, num_frames - s), slice(s, num_frames))))
        else:
            shifts.append((j, (slice(-s, num_frames), slice(0, num_frames + s))))
    return shifts


def temporal_depthwise_conv(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """Depthwise convolution over time with zero padding k // 2 on (B, T, N, C) input.

    ``weight`` is (C, k) and ``bias`` (C,) or None: the same function as
    ``nn.Conv3d(C, C, (k, 1, 1), padding=(k // 2, 0, 0), groups=C)`` on (B, C, T, g, g),
    computed tokens-last as a sum of time-shifted, per-channel scaled frames. Runs in x's
    dtype (the autocast dtype of the activations it follows).
    """
    return _TemporalDepthwiseConv.apply(x, weight, bias)


class _Conv3dTaps(torch.autograd.Function):
    @staticmethod
    def forward(ctx, weight, dtype):
        d, c, k, ph, pw = weight.shape
        ctx.weight_shape, ctx.weight_dtype = weight.shape, weight.dtype
        taps = weight.new_empty((k, d, c, ph, pw), dtype=dtype)
        taps.copy_(weight.permute(2, 0, 1, 3, 4))  # permute and cast in one pass
        return taps.view(k * d, c * ph * pw)

    @staticmethod
    def backward(ctx, grad_taps):
        d, c, k, ph, pw = ctx.weight_shape
        # Straight into the parameter's own (contiguous) layout and dtype, so that the
        # gradient accumulation takes this tensor as it is instead of copying it once more.
        grad = grad_taps.new_empty(ctx.weight_shape, dtype=ctx.weight_dtype)
        grad.copy_(grad_taps.view(k, d, c, ph, pw).permute(1, 2, 0, 3, 4))
        return grad, None


def conv3d_taps(weight: Tensor, dtype: torch.dtype) -> Tensor:
    """A Conv3d weight (d, C, k, P, P) as its temporal taps stacked over output channels:
    (k * d, C * P * P) in ``dtype``, row ``j * d + o`` = tap ``j`` of output channel ``o``."""
    return _Conv3dTaps.apply(weight, dtype)
