"""Multiply-adds: of any call (``count_gmac``) and of one view's forward (``count_flops``).

``count_gmac`` counts with ``FlopCounterMode``: the matrix products and convolutions of a call,
with the CPU attention kernels added (the counter knows only the CUDA ones). ``count_flops``
applies it to our model's forward on one view, what the paper's "TFLOPs" (``paper_tflops``,
from ``tdsclip/paper.yaml``) and fvcore count: one multiply-add counted once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode


def _cpu_attention_flops(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return flop_counter.sdpa_flop_count(query, key, value)


def _cpu_attention_backward_flops(grad_out, query, key, value, *args, out_shape=None, **kwargs):
    return flop_counter.sdpa_backward_flop_count(grad_out, query, key, value)


# FlopCounterMode knows the CUDA attention kernels but not the CPU one, which
# scaled_dot_product_attention (and nn.MultiheadAttention) run on the CPU: without these,
# attention's two products would count as nothing there.
CPU_ATTENTION_FLOPS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention_flops,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: (
        _cpu_attention_backward_flops
    ),
}


def count_gmac(fn: Callable[[], Any]) -> float:
    """Multiply-adds (1e9) of the matrix products and convolutions of one call of ``fn``.

    Counted by FlopCounterMode, with CPU attention added (``CPU_ATTENTION_FLOPS``).
    nn.MultiheadAttention's inference fast path is one fused op that the counter cannot see
    into; it is switched off for the count, so that the tower's projections and attention
    are counted too (the same products either way).
    """
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION_FLOPS) as counter:
            fn()
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    return counter.get_total_flops() / 2e9  # the counter counts a multiply-add as 2


def count_flops(model: torch.nn.Module, cfg: Any) -> float:
    """Multiply-adds of one view's forward of ``model`` (built from ``cfg``), in T: what the
    paper and fvcore call FLOPs."""
    # Imported here: count_gmac (and the breakdown built on it) needs no configs or models.
    from tdsclip.bench.builders import video_shape

    shape = video_shape(cfg, 1)
    model.eval()
    with torch.no_grad():
        return count_gmac(lambda: model(torch.zeros(shape))) / 1e3


def paper_tflops(backbone: str, num_frames: int) -> float | None:
    """The paper's TFLOPs per view (Tables 1-2 in ``tdsclip/paper.yaml``) of the experiment
    with this tower and frame count; None where the paper gives none."""
    from tdsclip.engine.launch import compose_config
    from tdsclip.report.paper import load_paper

    for entry in load_paper():
        if entry.tflops is None or entry.overrides:
            continue
        cfg = compose_config(entry.command())
        if (cfg.model.backbone.name, cfg.data.num_frames) == (backbone, num_frames):
            return entry.tflops
    return None
