"""Where a training step's CPU time goes: matrix products, the optimizer, everything else.

``op_breakdown(fn, repeats)`` runs ``fn`` once under ``FlopCounterMode`` (the multiply-adds
of its matrix products and convolutions, ``tdsclip.bench.flops.count_gmac``), ``repeats``
times timed, and ``repeats`` times under ``torch.profiler``, whose self CPU times it sums by
operator: matrix products (``aten::mm``, ``addmm``, ``bmm``, ``baddbmm``, convolutions, fused
attention kernels) and the fused optimizer kernels. The rest of the call's wall time, timed
without the profiler (whose own overhead on thousands of small ops would otherwise land
there), is everything else: norms, activations, softmax, copies, casts, Python and dispatch.
``python -m tdsclip.benchmark --breakdown`` applies it to the training step and to the
frozen tower's forward alone; the difference of the two is the side network's share
(``side_share``).

Self CPU time is the wall time of an operator's own work when one Python thread drives the
intra-op thread pool, as in training on the CPU. On a GPU it would be launch time, not kernel
time, so the breakdown is CPU-only.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

from tdsclip.bench.flops import count_gmac

# Operators whose self time is matrix-product work (and what FlopCounterMode counts).
MATMUL_OPS = frozenset(
    {
        "aten::mm",
        "aten::addmm",
        "aten::bmm",
        "aten::baddbmm",
        "aten::addbmm",
        "aten::mkldnn_convolution",
        "aten::convolution_backward",
        "aten::_scaled_dot_product_flash_attention_for_cpu",
        "aten::_scaled_dot_product_flash_attention_for_cpu_backward",
    }
)
OPTIMIZER_OPS = frozenset({"aten::_fused_adamw_", "aten::_fused_adam_", "aten::_fused_sgd_"})


def op_breakdown(
    fn: Callable[[], Any], repeats: int = 2, wall_s: float | None = None
) -> dict[str, float]:
    """Seconds per call of ``fn`` by category, and the multiply-adds of its matrix products.

    Returns ``wall_s`` (the given one, e.g. timed by the caller alternately with another
    function, or else the median of ``repeats`` timed calls, without the profiler),
    ``matmul_s`` and ``optimizer_s`` (self CPU time per call under the profiler), ``other_s``
    (the rest of ``wall_s``, so the profiler's own overhead is not in it), ``gmac``
    (multiply-adds per call, 1e9) and ``gmac_per_s`` (``gmac / matmul_s``).
    """
    from torch.profiler import ProfilerActivity, profile, schedule

    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    gmac = count_gmac(fn)
    if wall_s is None:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        wall_s = statistics.median(times)
    # One call under the profiler before the recorded ones: the profiler's start-up (and the
    # thread pool waking up after it) lands there, not on the first recorded operators.
    window = schedule(wait=0, warmup=1, active=repeats, repeat=1)
    with profile(activities=[ProfilerActivity.CPU], schedule=window) as prof:
        for _ in range(1 + repeats):
            fn()
            prof.step()
    matmul = optimizer = 0.0
    for event in prof.key_averages():
        seconds = event.self_cpu_time_total / 1e6 / repeats
        if event.key in MATMUL_OPS:
            matmul += seconds
        elif event.key in OPTIMIZER_OPS:
            optimizer += seconds
    return {
        "wall_s": wall_s,
        "matmul_s": matmul,
        "optimizer_s": optimizer,
        "other_s": wall_s - matmul - optimizer,
        "gmac": gmac,
        "gmac_per_s": gmac / matmul if matmul > 0 else float("nan"),
    }


def side_share(step: dict[str, float], floor: dict[str, float]) -> dict[str, float]:
    """The training step minus the tower's forward (both from ``op_breakdown``), in units of
    that forward's time: ``matmul`` + ``optimizer`` + ``other`` = step / floor - 1."""
    base = floor["wall_s"]
    matmul = step["matmul_s"] - floor["matmul_s"]
    return {
        "matmul": matmul / base,
        "optimizer": step["optimizer_s"] / base,
        "other": (step["wall_s"] - base - matmul - step["optimizer_s"]) / base,
        "gmac": step["gmac"] - floor["gmac"],
        "gmac_per_s": (step["gmac"] - floor["gmac"]) / matmul if matmul > 0 else float("nan"),
    }
