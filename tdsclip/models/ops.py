"""Memory-lean autograd functions for the side network's hot path.

Each computes exactly what its plain PyTorch composition computes (the tests compare values
and gradients) but keeps less for backward:

- ``frozen_norm_linear``: LayerNorm + Linear of frozen backbone tokens. Plain autograd keeps
  the LayerNorm's input (fp32 under CUDA autocast) *and* its bf16 output; no gradient ever
  flows into the frozen tokens, so only the normalised tokens in the compute dtype are kept
  (half the bytes on CPU, a third on CUDA).
- ``gelu_linear``: GELU then Linear, keeping only the GELU input; the GELU output that the
  Linear's weight gradient needs is recomputed (a pointwise op) instead of stored.
- ``sigmoid_gate``: ``z + z * (sigmoid(y) - 0.5)`` keeping ``z`` and ``y`` only.
- ``layer_norm_in_dtype``: LayerNorm that, under autocast, runs on the bf16/fp16 activations
  (accumulating in fp32 inside the kernel) instead of on the fp32 copy CUDA autocast makes
  (CPU autocast already keeps LayerNorm in bf16).
"""

from __future__ import annotations

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
            h = torch.addcmul(norm_bias.to(dtype), xhat, norm_weight.to(dtype))  # LN output
            out = F.linear(h, weight.to(dtype), bias.to(dtype))  # (..., d)
        ctx.save_for_backward(xhat, norm_weight, norm_bias, weight)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        xhat, norm_weight, norm_bias, weight = ctx.saved_tensors
        dtype = xhat.dtype
        with torch.autocast(grad_out.device.type, enabled=False):
            g = grad_out.to(dtype).reshape(-1, grad_out.shape[-1])  # (tokens, d)
            xh = xhat.reshape(-1, xhat.shape[-1])  # (tokens, D)
            h = torch.addcmul(norm_bias.to(dtype), xh, norm_weight.to(dtype))  # recomputed
            grad_weight = g.t().mm(h).float()  # (d, D)
            # Reductions accumulate in fp32 inside the kernels whatever the dtype.
            grad_bias = g.sum(0).float()
            grad_h = g.mm(weight.to(dtype))  # (tokens, D)
            grad_norm_weight = (grad_h * xh).sum(0).float()
            grad_norm_bias = grad_h.sum(0).float()
        return None, grad_norm_weight, grad_norm_bias, grad_weight, grad_bias, None, None


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
        ctx.input_dtype = a.dtype
        with torch.autocast(a.device.type, enabled=False):
            a = a.to(dtype)
            out = F.linear(F.gelu(a), weight.to(dtype), bias.to(dtype))
        ctx.save_for_backward(a, weight)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        a, weight = ctx.saved_tensors
        dtype = a.dtype
        with torch.enable_grad(), torch.autocast(grad_out.device.type, enabled=False):
            a_ = a.detach().requires_grad_(True)
            g = F.gelu(a_)  # recomputed, (..., 4d)
            go = grad_out.to(dtype)
            grad_weight = go.reshape(-1, go.shape[-1]).t().mm(g.detach().reshape(-1, g.shape[-1]))
            grad_bias = go.reshape(-1, go.shape[-1]).sum(0).float()
            grad_g = go.matmul(weight.to(dtype))
            (grad_a,) = torch.autograd.grad(g, a_, grad_g)
        return grad_a.to(ctx.input_dtype), grad_weight.float(), grad_bias, None


def gelu_linear(a: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """``linear(gelu(a))`` keeping only ``a`` for backward: (..., 4d) -> (..., d)."""
    return _GeluLinear.apply(a, weight, bias, compute_dtype(a))


class _SigmoidGate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z, y):
        ctx.save_for_backward(z, y)
        return z + z * (torch.sigmoid(y) - 0.5)

    @staticmethod
    def backward(ctx, grad_out):
        z, y = ctx.saved_tensors
        s = torch.sigmoid(y)
        grad_z = grad_out * (s + 0.5)
        grad_y = grad_out * z * s * (1.0 - s)
        return grad_z, grad_y


def sigmoid_gate(z: Tensor, y: Tensor) -> Tensor:
    """``z + z * (sigmoid(y) - 0.5)`` keeping only ``z`` and ``y``."""
    if y.dtype != z.dtype:
        y = y.to(z.dtype)
    return _SigmoidGate.apply(z, y)


def layer_norm_in_dtype(x: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
    """LayerNorm in the activations' own dtype, even under autocast (fp32 accumulation)."""
    if not torch.is_autocast_enabled(x.device.type) or x.dtype == torch.float32:
        return F.layer_norm(x, x.shape[-1:], weight, bias, eps)
    with torch.autocast(x.device.type, enabled=False):
        return F.layer_norm(x, x.shape[-1:], weight.to(x.dtype), bias.to(x.dtype), eps)


class _AttentionRecomputeBackward(torch.autograd.Function):
    """scaled_dot_product_attention forward; backward recomputes the probabilities with
    batched matmuls (a full-matrix flash-attention backward). Used on the CPU, where the fused
    kernel's backward is several times slower than this for the side network's shapes."""

    @staticmethod
    def forward(ctx, q, k, v):
        out = F.scaled_dot_product_attention(q, k, v)  # (..., Nq, hd)
        ctx.save_for_backward(q, k, v, out)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, out = ctx.saved_tensors
        scale = q.shape[-1] ** -0.5
        grad_out = grad_out.to(out.dtype)
        probs = torch.softmax(q.matmul(k.transpose(-1, -2)) * scale, dim=-1)  # (..., Nq, Nk)
        grad_v = probs.transpose(-1, -2).matmul(grad_out)  # (..., Nk, hd)
        grad_probs = grad_out.matmul(v.transpose(-1, -2))  # (..., Nq, Nk)
        row = (grad_out * out).sum(-1, keepdim=True)  # (..., Nq, 1): sum_k p * dp
        grad_scores = probs * (grad_probs - row) * scale  # (..., Nq, Nk)
        grad_q = grad_scores.matmul(k)  # (..., Nq, hd)
        grad_k = grad_scores.transpose(-1, -2).matmul(q)  # (..., Nk, hd)
        return grad_q, grad_k, grad_v


def attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """``scaled_dot_product_attention(q, k, v)`` (no mask, default scale), (..., N, hd).

    On CUDA it is exactly that (fused kernels forward and backward). On the CPU the forward is
    the same call and the backward recomputes the attention probabilities with batched matmuls,
    because PyTorch's CPU flash-attention backward is the slowest op of a side-network step.
    """
    if q.device.type == "cpu" and torch.is_grad_enabled() and q.requires_grad:
        return _AttentionRecomputeBackward.apply(q, k, v)
    return F.scaled_dot_product_attention(q, k, v)
