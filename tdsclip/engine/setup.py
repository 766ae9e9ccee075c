"""What a training run builds before its first step: data, model, loaders, optimisation.

Each builder reads its part of the config and returns plain objects; :class:`Trainer` owns
them. Rank 0 prepares the datasets first, so that generated data is written only once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig
from torch.nn.parallel import DistributedDataParallel
from torch.optim.lr_scheduler import LRScheduler
from torch.utils.data import DataLoader

from tdsclip.engine import distributed
from tdsclip.engine.context import ProcessContext
from tdsclip.engine.evaluation import eval_batch_size
from tdsclip.engine.optim import build_optimizer, build_scheduler
from tdsclip.errors import ConfigError
from tdsclip.models import TDSCLIP, SideNetwork, build_model, format_parameter_table
from tdsclip.models.layers import convert_sync_batchnorm

log = logging.getLogger("tdsclip.train")


def prepare_datasets(data_cfg: DictConfig, dinfo: distributed.DistInfo) -> tuple[Any, Any]:
    """The train and val sets; rank 0 builds first (it may generate the data)."""
    from tdsclip.data import build_dataset

    if not dinfo.is_main:
        distributed.barrier()
    train_set = build_dataset(data_cfg, "train")
    val_set = build_dataset(data_cfg, "val")
    if dinfo.is_main:
        distributed.barrier()
    return train_set, val_set


@dataclass
class TrainingModel:
    """The model as training runs it (``model``, its side network DDP-wrapped when
    distributed), the bare side network (optimizer, checkpoints) and the same model without
    the wrapper for evaluation, whose unequal shares per rank must not enter DDP's
    collectives."""

    model: TDSCLIP
    side: SideNetwork
    eval_model: TDSCLIP


def build_training_model(cfg: DictConfig, ctx: ProcessContext) -> TrainingModel:
    """The configured model on the device, with the speed options of ``trainer`` applied."""
    tc = cfg.trainer
    model = build_model(cfg.model)
    if ctx.is_main:
        log.info("model:\n%s", format_parameter_table(model))
    model.to(ctx.device)
    if ctx.dtype is not None:
        model.backbone.cast_weights(ctx.dtype)  # the frozen tower runs in bf16/fp16 throughout
    if tc.grad_checkpointing:
        model.side.set_grad_checkpointing(True)
    if tc.sync_bn and ctx.dist.enabled:
        if ctx.device.type != "cuda":
            raise ConfigError("trainer.sync_bn", "needs CUDA devices")
        model.side = convert_sync_batchnorm(model.side)
    if tc.compile:
        model.side.compile_blocks()
    side = model.side
    eval_model = TDSCLIP(model.backbone, side)
    if ctx.dist.enabled:
        device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        model.side = DistributedDataParallel(side, device_ids=device_ids)
    return TrainingModel(model=model, side=side, eval_model=eval_model)


def build_loaders(
    cfg: DictConfig, ctx: ProcessContext, train_set: Any, val_set: Any
) -> tuple[DataLoader, DataLoader]:
    """The training loader (drops the last partial batch) and the validation loader."""
    from tdsclip.data import build_loader

    common = dict(
        seed=cfg.seed,
        rank=ctx.dist.rank,
        world_size=ctx.dist.world_size,
        num_workers=cfg.data.workers,
        pin_memory=cfg.data.pin_memory and ctx.device.type == "cuda",
        prefetch_factor=cfg.data.prefetch_factor,
        persistent_workers=cfg.data.persistent_workers,
    )
    train = build_loader(
        train_set, split="train", batch_size=cfg.data.batch_size, drop_last=True, **common
    )
    val_batch = eval_batch_size(cfg.data, "val")
    val = build_loader(val_set, split="val", batch_size=val_batch, drop_last=False, **common)
    return train, val


def accumulation_steps(effective_batch: int | None, batch_size: int, world_size: int) -> int:
    """Micro-batches per optimizer step so that steps see ``effective_batch`` videos."""
    if effective_batch is None:
        return 1
    per_pass = batch_size * world_size
    if effective_batch % per_pass:
        raise ConfigError(
            "optim.effective_batch",
            f"{effective_batch} is not a multiple of data.batch_size x GPUs = {batch_size} x "
            f"{world_size}; change one of them (null: step on every batch)",
        )
    return effective_batch // per_pass


@dataclass
class Schedule:
    """How an epoch divides into micro-batches and optimizer steps."""

    accumulate: int  # micro-batches per optimizer step
    micro_per_epoch: int  # micro-batches per epoch and process (whole steps only)

    @property
    def steps_per_epoch(self) -> int:
        return self.micro_per_epoch // self.accumulate


def build_schedule(cfg: DictConfig, world_size: int, batches_per_epoch: int) -> Schedule:
    accumulate = accumulation_steps(cfg.optim.effective_batch, cfg.data.batch_size, world_size)
    micro = batches_per_epoch - batches_per_epoch % accumulate
    if micro == 0:
        raise ConfigError(
            "data.batch_size",
            f"an epoch has {batches_per_epoch} batches per process, fewer than the "
            f"{accumulate} accumulation steps of one optimizer step: more data or smaller batch",
        )
    return Schedule(accumulate=accumulate, micro_per_epoch=micro)


@dataclass
class Optimisation:
    optimizer: torch.optim.Optimizer
    scheduler: LRScheduler
    scaler: torch.amp.GradScaler | None  # fp16 only


def build_optimisation(
    cfg: DictConfig, side: SideNetwork, ctx: ProcessContext, steps_per_epoch: int
) -> Optimisation:
    """AdamW over the side network, the warm-up + cosine schedule, fp16's GradScaler."""
    oc = cfg.optim
    optimizer = build_optimizer(
        side, lr=oc.lr, weight_decay=oc.weight_decay, betas=tuple(oc.betas), eps=oc.eps
    )
    scheduler = build_scheduler(
        optimizer,
        warmup_steps=round(oc.warmup_epochs * steps_per_epoch),
        total_steps=cfg.trainer.epochs * steps_per_epoch,
        min_lr=oc.min_lr,
        lr=oc.lr,
    )
    scaler = torch.amp.GradScaler(ctx.device.type) if ctx.precision.needs_scaler else None
    return Optimisation(optimizer=optimizer, scheduler=scheduler, scaler=scaler)
