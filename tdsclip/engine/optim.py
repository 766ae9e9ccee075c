"""AdamW over the side network and the warm-up + cosine learning-rate schedule."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.optim.lr_scheduler import LambdaLR

_NORMS = (nn.LayerNorm, nn.GroupNorm, _BatchNorm)


def param_groups(module: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups by module membership: decay for weights of Linear/Conv-like modules;
    no decay for normalisation layers, biases and the modules' declared embeddings
    (``no_weight_decay()`` returning attribute names, as timm models do)."""
    decay, no_decay = [], []
    for sub in module.modules():
        skip = set(sub.no_weight_decay()) if hasattr(sub, "no_weight_decay") else set()
        for name, param in sub.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            if isinstance(sub, _NORMS) or name == "bias" or name in skip:
                no_decay.append(param)
            else:
                decay.append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(
    module: nn.Module,
    *,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> torch.optim.AdamW:
    """AdamW over ``module``'s trainable parameters only (the frozen tower never enters)."""
    groups = param_groups(module, weight_decay)
    # The fused kernel (one op per step, CPU and CUDA) when every parameter can use it.
    fused = all(p.device.type in ("cpu", "cuda") for g in groups for p in g["params"])
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=fused or None)


def warmup_cosine(step: int, *, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """LR multiplier: linear 0 -> 1 over ``warmup_steps``, then cosine 1 -> ``min_ratio``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    *,
    warmup_steps: int,
    total_steps: int,
    min_lr: float,
    lr: float,
) -> LambdaLR:
    """Per-iteration schedule (call ``step()`` after every optimizer step)."""

    def multiplier(step: int) -> float:
        return warmup_cosine(
            step, warmup_steps=warmup_steps, total_steps=total_steps, min_ratio=min_lr / lr
        )

    return LambdaLR(optimizer, multiplier)
