"""Training: `python -m tdsclip.train [experiment=NAME] [key=value ...]`.

The same command runs on one CPU, one GPU, under ``torchrun --nproc_per_node=N`` (also
multi-node), as Hydra ``--multirun`` sweeps, and with ``trainer.nproc=N`` starting N local
workers itself (sweeps cannot use torchrun). With no arguments it runs the built-in default
job: a tiny TDS-CLIP on synthetic motion videos, on the CPU, in a few minutes.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import hydra
import torch
import torch.nn.functional as F
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from torch.nn.parallel import DistributedDataParallel

import tdsclip
from tdsclip import distributed, runtime
from tdsclip.checkpoint import TRAIN_FORMAT, atomic_save, load_checkpoint
from tdsclip.eval import collect_scores, eval_batch_size, evaluate_split
from tdsclip.metrics import JSONLSink, MultiSink, TensorBoardSink, WandbSink, topk_correct
from tdsclip.models import TDSCLIP, build_model, format_parameter_table
from tdsclip.models.layers import convert_sync_batchnorm
from tdsclip.optim import build_optimizer, build_scheduler

log = logging.getLogger("tdsclip.train")


@dataclass
class TrainState:
    """Counters saved in every checkpoint (with model, optimizer, scheduler, scaler, RNG)."""

    epoch: int = 0  # epoch in progress (0-based)
    step: int = 0  # optimizer steps taken
    epoch_samples: int = 0  # videos of the current epoch this rank has consumed
    best_top1: float = -math.inf
    nonfinite_in_row: int = 0
    nonfinite_total: int = 0


class NonFiniteLossError(RuntimeError):
    pass


def accumulation_steps(effective_batch: int | None, batch_size: int, world_size: int) -> int:
    """Micro-batches per optimizer step so that steps see ``effective_batch`` videos."""
    if effective_batch is None:
        return 1
    per_pass = batch_size * world_size
    if effective_batch % per_pass:
        raise ValueError(
            f"optim.effective_batch={effective_batch} is not a multiple of data.batch_size x "
            f"GPUs = {batch_size} x {world_size}; change one of them"
        )
    return effective_batch // per_pass


def _architecture(model_cfg: Any) -> dict[str, Any]:
    """The model config without the pretrained file's location (which may move)."""
    if isinstance(model_cfg, DictConfig):
        model_cfg = OmegaConf.to_container(model_cfg, resolve=True)
    backbone = {k: v for k, v in model_cfg["backbone"].items() if k != "pretrained"}
    return {**model_cfg, "backbone": backbone}


def _resume_path(resume: str | None, ckpt_dir: Path) -> Path | None:
    if resume in (None, "", "none"):
        return None
    if resume == "auto":
        last = ckpt_dir / "last.pt"
        if last.is_file():
            return last
        log.info("trainer.resume=auto: no checkpoint in %s yet, starting fresh", ckpt_dir)
        return None
    path = Path(resume).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"trainer.resume={resume}: no such checkpoint")
    return path


def _make_sinks(cfg: DictConfig, run_dir: Path) -> MultiSink:
    sinks = []
    if cfg.logger.jsonl:
        sinks.append(JSONLSink(run_dir / "metrics.jsonl"))
    if cfg.logger.tensorboard:
        sinks.append(TensorBoardSink(run_dir / "tensorboard"))
    if cfg.logger.wandb.enabled:
        sinks.append(
            WandbSink(
                project=cfg.logger.wandb.project,
                entity=cfg.logger.wandb.entity,
                mode=cfg.logger.wandb.mode,
                tags=list(cfg.logger.wandb.tags),
                name=f"{cfg.task_name}/{cfg.run_id}",
                run_id=f"{cfg.task_name}-{cfg.run_id}".replace("/", "-"),
                run_dir=run_dir,
                config=OmegaConf.to_container(cfg, resolve=True),
            )
        )
    return MultiSink(sinks)


def _prepare_datasets(cfg: DictConfig, dinfo: distributed.DistInfo) -> tuple[Any, Any]:
    """Build train/val sets; rank 0 first, so that generated data is written only once."""
    from tdsclip.data import build_dataset

    if not dinfo.is_main:
        distributed.barrier()
    train_set = build_dataset(cfg.data, "train")
    val_set = build_dataset(cfg.data, "val")
    if dinfo.is_main:
        distributed.barrier()
    return train_set, val_set


def _check_cuda_graph(tc: DictConfig, device: torch.device, dinfo: distributed.DistInfo) -> None:
    """trainer.cuda_graph graphs one process's model on a CUDA device; say so, not crash."""
    if device.type != "cuda":
        raise ValueError("trainer.cuda_graph needs a CUDA device (trainer.device=cuda or auto)")
    if dinfo.enabled:
        raise ValueError(
            "trainer.cuda_graph is for single-GPU training: DistributedDataParallel's hooks "
            "are not captured; leave it off under torchrun or with trainer.nproc > 1"
        )
    if tc.compile:
        raise ValueError(
            "trainer.cuda_graph and trainer.compile are exclusive: pick one (compiled blocks "
            "are not captured as graphs here)"
        )


def train(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Train (and validate) as ``cfg`` says; returns the final validation metrics."""
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    from tdsclip.data import BadSampleTracker, build_loader, normalize_video

    tc, oc = cfg.trainer, cfg.optim
    # The code this run imported, read now: a checkout edited mid-run must not relabel it.
    code_revision = runtime.code_revision()
    dinfo = distributed.init_process_group()
    runtime.quiet_non_main(dinfo.rank)
    device = runtime.resolve_device(tc.device, dinfo.local_rank)
    precision = runtime.resolve_precision(tc.precision, device)
    dtype = precision.dtype
    if tc.cuda_graph:
        _check_cuda_graph(tc, device, dinfo)
    threads = runtime.plan_threads(
        tc.threads, num_workers=cfg.data.workers, local_processes=dinfo.local_world_size
    )
    runtime.apply_threads(threads)
    if device.type == "cpu" and tc.cpu_keep_freed_memory:
        runtime.keep_freed_memory()
    runtime.set_deterministic(tc.deterministic)
    runtime.seed_everything(cfg.seed)  # identical model init on every rank
    ckpt_dir = run_dir / "checkpoints"

    # ------------------------------------------------------------------ data and model
    train_set, val_set = _prepare_datasets(cfg, dinfo)
    model = build_model(cfg.model)
    if train_set.num_classes != cfg.model.num_classes:
        raise ValueError(
            f"model.num_classes={cfg.model.num_classes} but the data has {train_set.num_classes}"
        )
    if dinfo.is_main:
        log.info("run dir: %s", run_dir)
        log.info("model:\n%s", format_parameter_table(model))
        log.info("precision: %s", precision.describe())
        log.info("threads: %s", threads.describe())
    model.to(device)
    if dtype is not None:
        model.backbone.cast_weights(dtype)  # the frozen tower runs in bf16/fp16 throughout
    if tc.grad_checkpointing:
        model.side.set_grad_checkpointing(True)
    if tc.sync_bn and dinfo.enabled:
        if device.type != "cuda":
            raise ValueError("trainer.sync_bn needs CUDA devices")
        model.side = convert_sync_batchnorm(model.side)
    if tc.compile:
        model.side.compile_blocks()
    side = model.side
    # Evaluation runs unequal shares per rank, so it must not go through DDP's collectives.
    eval_model = TDSCLIP(model.backbone, side)
    if dinfo.enabled:
        model.side = DistributedDataParallel(
            side, device_ids=[device.index] if device.type == "cuda" else None
        )

    accumulate = accumulation_steps(oc.effective_batch, cfg.data.batch_size, dinfo.world_size)
    loader_args = dict(
        seed=cfg.seed,
        rank=dinfo.rank,
        world_size=dinfo.world_size,
        num_workers=cfg.data.workers,
        pin_memory=cfg.data.pin_memory and device.type == "cuda",
        prefetch_factor=cfg.data.prefetch_factor,
    )
    train_loader = build_loader(
        train_set,
        split="train",
        batch_size=cfg.data.batch_size,
        persistent_workers=cfg.data.persistent_workers,
        drop_last=True,
        **loader_args,
    )
    val_loader = build_loader(
        val_set,
        split="val",
        batch_size=eval_batch_size(cfg.data, "val"),
        persistent_workers=cfg.data.persistent_workers,
        drop_last=False,
        **loader_args,
    )
    micro_per_epoch = len(train_loader) - len(train_loader) % accumulate
    if micro_per_epoch == 0:
        raise ValueError(
            f"an epoch has {len(train_loader)} batches per process, fewer than the "
            f"{accumulate} accumulation steps of one optimizer step: more data or smaller batch"
        )
    steps_per_epoch = micro_per_epoch // accumulate

    # ------------------------------------------------------------------ optimisation
    optimizer = build_optimizer(
        side, lr=oc.lr, weight_decay=oc.weight_decay, betas=tuple(oc.betas), eps=oc.eps
    )
    scheduler = build_scheduler(
        optimizer,
        warmup_steps=round(oc.warmup_epochs * steps_per_epoch),
        total_steps=tc.epochs * steps_per_epoch,
        min_lr=oc.min_lr,
        lr=oc.lr,
    )
    scaler = torch.amp.GradScaler(device.type) if precision.needs_scaler else None
    state = TrainState()

    resume = _resume_path(tc.resume, ckpt_dir)
    if resume is not None:
        ckpt = load_checkpoint(resume)
        if ckpt.get("format") != TRAIN_FORMAT:
            raise ValueError(f"{resume} is a model file, not a training checkpoint")
        if _architecture(ckpt["model_config"]) != _architecture(cfg.model):
            raise ValueError(f"{resume} was trained with another model config; refusing to resume")
        side.load_state_dict(ckpt["side"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if scaler is not None and ckpt["scaler"] is not None:
            scaler.load_state_dict(ckpt["scaler"])
        state = TrainState(**ckpt["state"])
        rngs = ckpt["rng"]
        runtime.set_rng_state(rngs[dinfo.rank] if dinfo.rank < len(rngs) else rngs[0])
        log.info("resumed from %s at epoch %d, step %d", resume, state.epoch, state.step)

    def save(name: str, metrics: dict[str, float] | None = None) -> None:
        rngs = distributed.all_gather_objects(runtime.rng_state())
        if not dinfo.is_main:
            return
        atomic_save(
            {
                "format": TRAIN_FORMAT,
                "code_version": tdsclip.__version__,
                "code_revision": code_revision,
                "model_config": OmegaConf.to_container(cfg.model, resolve=True),
                "classes": list(train_set.classes),
                "side": side.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else None,
                "state": asdict(state),
                "rng": rngs,
                "config": OmegaConf.to_container(cfg, resolve=True),
                "metrics": metrics or {},
            },
            ckpt_dir / f"{name}.pt",
        )

    sinks = _make_sinks(cfg, run_dir) if dinfo.is_main else MultiSink([])
    bad_samples = BadSampleTracker()
    preempt = runtime.PreemptionSignal()
    final: dict[str, Any] = {}
    progress = dinfo.is_main and tc.progress_bar
    graphed = False  # trainer.cuda_graph: captured on the first batch

    with preempt.installed(), logging_redirect_tqdm():
        while state.epoch < tc.epochs:
            epoch = state.epoch
            model.train()
            train_loader.sampler.set_epoch(epoch, start=state.epoch_samples)
            done_micro = state.epoch_samples // cfg.data.batch_size
            bar = tqdm(
                total=micro_per_epoch,
                initial=done_micro,
                disable=not progress,
                desc=f"epoch {epoch + 1}/{tc.epochs}",
                dynamic_ncols=True,
            )
            window = torch.zeros(4, dtype=torch.float64)  # loss sum, top1, top5, clips
            wait = busy = 0.0
            tick = time.perf_counter()
            stop = nonfinite = False
            batches = iter(train_loader)
            for micro in range(done_micro, micro_per_epoch):
                batch = next(batches)
                got = time.perf_counter()
                wait += got - tick
                bad_samples.update(batch["skipped"])
                video = normalize_video(batch["video"].to(device, non_blocking=True))
                video = video.flatten(0, 1)  # (B*S, T, M, 3, H, W)
                labels = batch["label"].to(device, non_blocking=True).flatten()  # (B*S,)
                last_micro = (micro + 1) % accumulate == 0
                sync = contextlib.nullcontext()
                if dinfo.enabled and not last_micro:
                    sync = model.side.no_sync()
                if tc.cuda_graph and not graphed:
                    runtime.capture_cuda_graphs(model, torch.randn_like(video), dtype)
                    graphed = True
                    log.info("training step captured as CUDA graphs, batch %s", tuple(video.shape))
                with sync:
                    with runtime.autocast(device, dtype, cache=not graphed):
                        logits = model(video)
                    loss = F.cross_entropy(
                        logits.float(), labels, label_smoothing=oc.label_smoothing
                    )
                    scaled = loss / accumulate
                    (scaler.scale(scaled) if scaler is not None else scaled).backward()
                state.epoch_samples += cfg.data.batch_size
                loss_value = loss.item()
                nonfinite = nonfinite or not math.isfinite(loss_value)
                with torch.no_grad():
                    hits = topk_correct(logits.detach().float(), labels)
                    window += torch.tensor(
                        [loss_value * len(labels), hits[1], hits[5], len(labels)],
                        dtype=torch.float64,
                    )
                bar.update(1)
                if not last_micro:
                    tick = time.perf_counter()
                    busy += tick - got
                    continue

                # ---------------------------------------------------- optimizer step
                flags = torch.tensor([float(nonfinite), float(preempt.received is not None)])
                distributed.all_reduce_sum(flags)
                nonfinite = False
                if flags[0] > 0:
                    optimizer.zero_grad(set_to_none=True)
                    state.nonfinite_in_row += 1
                    state.nonfinite_total += 1
                    log.warning(
                        "non-finite loss at step %d: step skipped (%d in a row)",
                        state.step,
                        state.nonfinite_in_row,
                    )
                    if state.nonfinite_in_row >= tc.max_nonfinite:
                        raise NonFiniteLossError(
                            f"the loss was not finite for {state.nonfinite_in_row} steps in a "
                            f"row; stopping. The last good checkpoint, {ckpt_dir / 'last.pt'}, "
                            "is untouched. Try a lower optim.lr, trainer.precision=fp32 or "
                            "optim.grad_clip, and check the data."
                        )
                else:
                    state.nonfinite_in_row = 0
                    if scaler is not None:
                        scaler.unscale_(optimizer)
                    if oc.grad_clip:
                        torch.nn.utils.clip_grad_norm_(side.parameters(), oc.grad_clip)
                    if scaler is not None:
                        scaler.step(optimizer)
                        scaler.update()
                    else:
                        optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                    scheduler.step()
                    state.step += 1
                tick = time.perf_counter()
                busy += tick - got

                if state.step % tc.log_every == 0 or micro + 1 == micro_per_epoch:
                    distributed.all_reduce_sum(window)
                    n = max(window[3].item(), 1.0)
                    elapsed = wait + busy
                    metrics = {
                        "train/loss": window[0].item() / n,
                        "train/top1": 100.0 * window[1].item() / n,
                        "train/top5": 100.0 * window[2].item() / n,
                        "train/lr": optimizer.param_groups[0]["lr"],
                        "train/clips_per_s": window[3].item() / max(elapsed, 1e-9),
                        "train/data_wait": wait / max(elapsed, 1e-9),
                        "train/peak_mem_mb": runtime.peak_memory_mb(device),
                        "train/epoch": epoch + (micro + 1) / micro_per_epoch,
                        "train/nonfinite_total": float(state.nonfinite_total),
                    }
                    sinks.log(metrics, state.step)
                    bar.set_postfix(
                        loss=f"{metrics['train/loss']:.3f}", lr=f"{metrics['train/lr']:.2e}"
                    )
                    window.zero_()
                    wait = busy = 0.0
                if tc.checkpoint_every and state.step % tc.checkpoint_every == 0:
                    save("last")
                if flags[1] > 0:
                    stop = True
                    break
            bar.close()
            if stop:
                save("last")
                log.warning(
                    "preempted: saved %s at step %d; resume with trainer.resume=auto",
                    ckpt_dir / "last.pt",
                    state.step,
                )
                sinks.close()
                preempt.forward()  # e.g. lets submitit requeue the job
                return {"status": "preempted", "step": state.step}

            bad = bad_samples.epoch_summary()
            bad_samples.reset_epoch()
            epoch_metrics: dict[str, float] = {"train/bad_samples": float(bad["replaced"])}
            if bad["replaced"]:
                log.warning(
                    "epoch %d: %d unreadable training samples (%d videos) were replaced",
                    epoch + 1,
                    bad["replaced"],
                    bad["bad_videos"],
                )
            state.epoch += 1
            state.epoch_samples = 0
            is_last = state.epoch == tc.epochs
            if is_last or state.epoch % tc.eval_every == 0:
                result = collect_scores(
                    eval_model, val_loader, device=device, amp_dtype=dtype, progress=progress
                )
                report = result.report(train_set.num_classes)
                final = {
                    "val_top1": report["top1"],
                    "val_top5": report["top5"],
                    "val_mean_class_acc": report["mean_class_acc"],
                    "val_videos": report["num_videos"],
                    "val_unreadable": report["unreadable"],
                }
                epoch_metrics |= {f"val/{k[4:]}": float(v) for k, v in final.items()}
                log.info(
                    "epoch %d: val top1 %.2f top5 %.2f over %d videos (%d unreadable, excluded)",
                    state.epoch,
                    report["top1"],
                    report["top5"],
                    report["num_videos"],
                    report["unreadable"],
                )
                if report["top1"] > state.best_top1:
                    state.best_top1 = report["top1"]
                    save("best", final)
            sinks.log(epoch_metrics, state.step)
            save("last", final)

    if tc.test_after_train:
        final |= _test_best(cfg, ckpt_dir / "best.pt", eval_model, device, dtype, dinfo, run_dir)
        sinks.log(
            {f"test/{k[5:]}": float(v) for k, v in final.items() if k.startswith("test_")},
            state.step,
        )
    sinks.close()
    final["chance"] = 100.0 / train_set.num_classes
    final["best_top1"] = state.best_top1
    final["status"] = "finished"
    return final


def _test_best(
    cfg: DictConfig,
    best: Path,
    model: TDSCLIP,
    device: torch.device,
    dtype: torch.dtype | None,
    dinfo: distributed.DistInfo,
    run_dir: Path,
) -> dict[str, Any]:
    """Multi-view test (clips x crops) of the best checkpoint; report in ``run_dir/test``."""
    distributed.barrier()  # rank 0 has written best.pt
    model.side.load_state_dict(load_checkpoint(best)["side"])
    summary = evaluate_split(
        model,
        cfg,
        "test",
        num_classes=cfg.model.num_classes,
        device=device,
        amp_dtype=dtype,
        dinfo=dinfo,
        out_dir=run_dir / "test",
        what=str(best),
    )
    return {f"test_{k}": v for k, v in summary.items()}


def run(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Train in this process, or start ``trainer.nproc`` local workers when not under torchrun."""
    nproc = int(cfg.trainer.nproc)
    if nproc > 1 and not distributed.launched_by_torchrun():
        container = OmegaConf.to_container(cfg, resolve=True)
        results = distributed.launch_local(nproc, _worker, container, str(run_dir))
        return results[0]
    return train(cfg, run_dir)


def _worker(cfg_container: dict[str, Any], run_dir: str) -> dict[str, Any]:
    """Entry point of a self-launched worker process."""
    rank = distributed.env_info().rank
    runtime.setup_worker_logging(rank, Path(run_dir) / "train.log")
    cfg = OmegaConf.create(cfg_container)
    OmegaConf.set_struct(cfg, True)
    try:
        return train(cfg, Path(run_dir))
    finally:
        distributed.destroy_process_group()


def final_line(result: dict[str, Any]) -> str:
    return (
        f"final: val_top1={result['val_top1']:.2f} val_top5={result['val_top5']:.2f} "
        f"chance={result['chance']:.2f}"
    )


@hydra.main(version_base="1.3", config_path=runtime.CONFIG_DIR, config_name="train")
def _hydra_main(cfg: DictConfig) -> float | None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    OmegaConf.set_struct(cfg, True)
    result = run(cfg, run_dir)
    distributed.destroy_process_group()
    if result.get("status") == "finished" and distributed.env_info().rank == 0:
        sys.stdout.flush()
        sys.stdout.write(final_line(result) + "\n")
        sys.stdout.flush()
        return float(result["val_top1"])  # the value a Hydra sweeper optimises
    return None


def main() -> None:
    runtime.run_hydra(_hydra_main)


if __name__ == "__main__":
    main()
