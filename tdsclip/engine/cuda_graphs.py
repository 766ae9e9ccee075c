"""CUDA graphs: the training forward and backward captured once and replayed
(``trainer.cuda_graph``)."""

from __future__ import annotations

from typing import Any

import torch

from tdsclip.engine.distributed import DistInfo
from tdsclip.engine.precision import autocast
from tdsclip.errors import ConfigError
from tdsclip.models.layers import batch_norm_stats_kept


def capture_cuda_graphs(
    model: torch.nn.Module, sample: torch.Tensor, dtype: torch.dtype | None
) -> torch.nn.Module:
    """Make ``model``'s training-mode forward and backward replays of two CUDA graphs.

    ``torch.cuda.make_graphed_callables`` captures one call on ``sample``'s shape: every
    later call in training mode copies its input into the captured buffer and launches the
    whole forward (backward) as one graph, instead of thousands of kernels one by one from
    Python, which leaves a GPU idle when the step is short. Gradients come out of the
    backward graph and accumulate into ``.grad`` as usual (accumulation, clipping, GradScaler
    and the optimizer run outside it). In eval mode the model runs as before. Every call must
    have the sample's shape and run under ``autocast(..., cache=False)``; the output is the
    graph's own buffer, overwritten by the next call. The warm-up iterations of the capture
    would update the BatchNorm running statistics; those are put back as they were.
    """
    if sample.device.type != "cuda":
        raise ValueError(f"CUDA graphs need a CUDA device, the sample is on {sample.device}")
    if not model.training:
        raise ValueError("capture the training step with the model in training mode")
    # Restored in place: the graphs read and write these very tensors.
    with batch_norm_stats_kept(model), autocast(sample.device, dtype, cache=False):
        torch.cuda.make_graphed_callables(model, (sample,), allow_unused_input=True)
    return model


def check_cuda_graph(trainer_cfg: Any, device: torch.device, dinfo: DistInfo) -> None:
    """trainer.cuda_graph graphs one process's model on a CUDA device; say so, not crash."""
    if device.type != "cuda":
        raise ConfigError("trainer.cuda_graph", "needs a CUDA device (trainer.device=cuda or auto)")
    if dinfo.enabled:
        raise ConfigError(
            "trainer.cuda_graph",
            "is for single-GPU training: DistributedDataParallel's hooks "
            "are not captured; leave it off under torchrun or with trainer.nproc > 1",
        )
    if trainer_cfg.compile:
        raise ConfigError(
            "trainer.cuda_graph",
            "and trainer.compile are exclusive: pick one (compiled blocks "
            "are not captured as graphs here)",
        )
