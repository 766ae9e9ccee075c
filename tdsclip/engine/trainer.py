"""The training loop, as named steps that read top to bottom.

``Trainer(cfg, run_dir).fit()`` is everything ``python -m tdsclip.train`` runs in one
process (every rank runs the same):

- ``__init__``: the process (device, precision, threads, seed), data, model, loaders,
  optimisation, metric sinks;
- ``resume``: a training checkpoint's weights, optimizer, schedule, counters and RNG states;
- per epoch ``train_epoch``: ``train_step`` (forward and backward of one micro-batch) and,
  every ``accumulate`` micro-batches, ``optimizer_step`` and ``log_step``; then
  ``end_epoch``: ``evaluate`` when due and ``save``;
- ``finish``: the optional multi-view test of ``best.pt``, the pictures of the run; or, on
  SIGTERM and friends, ``stop_preempted``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

import tdsclip
from tdsclip.engine import distributed
from tdsclip.engine.checkpoint import TRAIN_FORMAT, atomic_save, load_checkpoint
from tdsclip.engine.cli import check_not_overwriting, starts_fresh
from tdsclip.engine.context import setup_process
from tdsclip.engine.cuda_graphs import capture_cuda_graphs, check_cuda_graph
from tdsclip.engine.evaluation import collect_scores, test_checkpoint
from tdsclip.engine.launch import code_revision
from tdsclip.engine.memory import keep_freed_memory, peak_memory_mb
from tdsclip.engine.metrics import topk_correct
from tdsclip.engine.pictures import draw_training
from tdsclip.engine.precision import autocast
from tdsclip.engine.preemption import PreemptionSignal
from tdsclip.engine.seeding import rng_state, seed_everything, set_deterministic, set_rng_state
from tdsclip.engine.setup import (
    build_loaders,
    build_optimisation,
    build_schedule,
    build_training_model,
    prepare_datasets,
)
from tdsclip.engine.sinks import MultiSink, make_sinks
from tdsclip.errors import CheckpointError, RunError, UserError

log = logging.getLogger("tdsclip.train")


@dataclass
class TrainState:
    """Counters saved in every checkpoint (with model, optimizer, scheduler, scaler, RNG)."""

    epoch: int = 0  # epoch in progress (0-based)
    step: int = 0  # optimizer steps taken
    epoch_samples: int = 0  # videos of the current epoch this rank has consumed
    best_top1: float = -math.inf
    best_epoch: int = 0  # 1-based epoch of best.pt (0: none yet)
    nonfinite_in_row: int = 0
    nonfinite_total: int = 0


class NonFiniteLossError(RunError):
    """The loss stayed non-finite for ``trainer.max_nonfinite`` steps in a row."""


def model_architecture(model_cfg: Any) -> dict[str, Any]:
    """The model config without the pretrained file's location (which may move)."""
    if isinstance(model_cfg, DictConfig):
        model_cfg = OmegaConf.to_container(model_cfg, resolve=True)
    backbone = {k: v for k, v in model_cfg["backbone"].items() if k != "pretrained"}
    return {**model_cfg, "backbone": backbone}


def resume_path(resume: str | None, ckpt_dir: Path) -> Path | None:
    """The checkpoint ``trainer.resume`` names: none, this run's ``last.pt`` or a file."""
    if starts_fresh(resume):
        return None
    if resume == "auto":
        last = ckpt_dir / "last.pt"
        if last.is_file():
            return last
        log.info("trainer.resume=auto: no checkpoint in %s yet, starting fresh", ckpt_dir)
        return None
    path = Path(resume).expanduser()
    if not path.is_file():
        raise CheckpointError(
            f"trainer.resume={resume}: no such checkpoint",
            hint="trainer.resume=auto continues this run_id's last.pt",
        )
    return path


class StepWindow:
    """Training metrics summed over the micro-batches between two log lines."""

    def __init__(self) -> None:
        self.sums = torch.zeros(4, dtype=torch.float64)  # loss sum, top1, top5, clips
        self.wait = self.busy = 0.0  # seconds waiting for data, computing

    def add(self, loss: float, hits: dict[int, int], clips: int) -> None:
        self.sums += torch.tensor([loss * clips, hits[1], hits[5], clips], dtype=torch.float64)

    def metrics(self) -> dict[str, float]:
        """Means over every rank's clips (a collective: all ranks call it together)."""
        distributed.all_reduce_sum(self.sums)
        n = max(self.sums[3].item(), 1.0)
        elapsed = max(self.wait + self.busy, 1e-9)
        return {
            "train/loss": self.sums[0].item() / n,
            "train/top1": 100.0 * self.sums[1].item() / n,
            "train/top5": 100.0 * self.sums[2].item() / n,
            "train/clips_per_s": self.sums[3].item() / elapsed,
            "train/data_wait": self.wait / elapsed,
        }


class Trainer:
    """One training run in this process; see the module docstring for the steps."""

    def __init__(self, cfg: DictConfig, run_dir: Path) -> None:
        from tdsclip.data import BadSampleTracker

        self.cfg, self.tc, self.run_dir = cfg, cfg.trainer, run_dir
        self.ckpt_dir = run_dir / "checkpoints"
        check_not_overwriting(self.ckpt_dir, self.tc.resume)
        # The code this run imported, read now: a checkout edited mid-run must not relabel it.
        self.code_revision = code_revision()
        self.ctx = setup_process(cfg.trainer, num_workers=cfg.data.workers)
        self.device, self.dinfo = self.ctx.device, self.ctx.dist
        if self.tc.cuda_graph:
            check_cuda_graph(self.tc, self.device, self.dinfo)
        if self.device.type == "cpu" and self.tc.cpu_keep_freed_memory:
            keep_freed_memory()
        set_deterministic(self.tc.deterministic)
        seed_everything(cfg.seed)  # identical model init on every rank

        self.train_set, val_set = prepare_datasets(cfg.data, self.dinfo)
        # data.augment_on=device: the train set's copies are made here, after the H2D copy.
        self.device_augment = self.train_set.device_augment
        if self.train_set.num_classes != cfg.model.num_classes:
            raise UserError(
                f"model.num_classes={cfg.model.num_classes} but the data "
                f"({cfg.data.train_ann or cfg.data.root}) has {self.train_set.num_classes} classes",
                hint="set data.num_classes to the data's count (model.num_classes follows it)",
            )
        if self.dinfo.is_main:
            log.info("run dir: %s", run_dir)
        self.net = build_training_model(cfg, self.ctx)
        self.train_loader, self.val_loader = build_loaders(cfg, self.ctx, self.train_set, val_set)
        self.schedule = build_schedule(cfg, self.dinfo.world_size, len(self.train_loader))
        self.opt = build_optimisation(cfg, self.net.side, self.ctx, self.schedule.steps_per_epoch)
        self.state = TrainState()
        self.sinks = make_sinks(cfg, run_dir) if self.dinfo.is_main else MultiSink([])
        self.bad_samples = BadSampleTracker()
        self.preempt = PreemptionSignal()
        self.progress = self.dinfo.is_main and self.tc.progress_bar
        self.graphed = False  # trainer.cuda_graph: captured on the first batch
        self.final: dict[str, Any] = {}
        self.val_report: dict[str, Any] | None = None  # the last validation, for its pictures

    # ---------------------------------------------------------------------------- run
    def fit(self) -> dict[str, Any]:
        """Train (and validate) as the config says; returns the final metrics."""
        from tqdm.contrib.logging import logging_redirect_tqdm

        self.resume()
        with self.preempt.installed(), logging_redirect_tqdm():
            while self.state.epoch < self.tc.epochs:
                if not self.train_epoch():
                    return self.stop_preempted()
                self.end_epoch()
        return self.finish()

    def resume(self) -> None:
        """Continue from ``trainer.resume``'s checkpoint, if any, exactly where it stopped."""
        path = resume_path(self.tc.resume, self.ckpt_dir)
        if path is None:
            return
        ckpt = load_checkpoint(path)
        if ckpt.get("format") != TRAIN_FORMAT:
            raise CheckpointError(
                f"{path} is a model file, not a training checkpoint",
                hint="resume from a run's checkpoints/last.pt; a model file is for eval/predict",
            )
        if model_architecture(ckpt["model_config"]) != model_architecture(self.cfg.model):
            raise CheckpointError(
                f"{path} was trained with another model config; refusing to resume",
                hint="resume with the experiment and model.* overrides of that run",
            )
        self.net.side.load_state_dict(ckpt["side"])
        self.opt.optimizer.load_state_dict(ckpt["optimizer"])
        self.opt.scheduler.load_state_dict(ckpt["scheduler"])
        if self.opt.scaler is not None and ckpt["scaler"] is not None:
            self.opt.scaler.load_state_dict(ckpt["scaler"])
        self.state = TrainState(**ckpt["state"])
        rngs = ckpt["rng"]
        set_rng_state(rngs[self.dinfo.rank] if self.dinfo.rank < len(rngs) else rngs[0])
        log.info("resumed from %s at epoch %d, step %d", path, self.state.epoch, self.state.step)

    # -------------------------------------------------------------------------- epoch
    def train_epoch(self) -> bool:
        """The rest of the current epoch; False when a preemption signal stopped it."""
        from tqdm import tqdm

        epoch, batch_size = self.state.epoch, self.cfg.data.batch_size
        micro_per_epoch, accumulate = self.schedule.micro_per_epoch, self.schedule.accumulate
        self.net.model.train()
        self.train_loader.sampler.set_epoch(epoch, start=self.state.epoch_samples)
        done = self.state.epoch_samples // batch_size
        bar = tqdm(total=micro_per_epoch, initial=done, disable=not self.progress,
                   desc=f"epoch {epoch + 1}/{self.tc.epochs}", dynamic_ncols=True)  # fmt: skip
        window, nonfinite = StepWindow(), False
        batches = iter(self.train_loader)
        tick = time.perf_counter()
        for micro in range(done, micro_per_epoch):
            batch = next(batches)
            got = time.perf_counter()
            window.wait += got - tick
            last_micro = (micro + 1) % accumulate == 0
            nonfinite |= not self.train_step(batch, window, sync=last_micro)
            bar.update(1)
            if last_micro:
                preempted = self.optimizer_step(nonfinite)
                nonfinite = False
            tick = time.perf_counter()
            window.busy += tick - got
            if not last_micro:
                continue
            if self.state.step % self.tc.log_every == 0 or micro + 1 == micro_per_epoch:
                self.log_step(window, epoch + (micro + 1) / micro_per_epoch, bar)
                window = StepWindow()
            if self.tc.checkpoint_every and self.state.step % self.tc.checkpoint_every == 0:
                self.save("last")
            if preempted:
                bar.close()
                return False
        bar.close()
        return True

    def train_step(self, batch: dict[str, Any], window: StepWindow, *, sync: bool) -> bool:
        """Forward and backward of one micro-batch (gradients accumulate); ``sync=False``
        skips DDP's gradient all-reduce. Returns whether the loss was finite."""
        from tdsclip.data import normalize_video

        self.bad_samples.update(batch["skipped"])
        video = normalize_video(self.input_video(batch))
        video = video.flatten(0, 1)  # (B*S, T, M, 3, H, W)
        labels = batch["label"].to(self.device, non_blocking=True).flatten()  # (B*S,)
        model, scaler = self.net.model, self.opt.scaler
        if self.tc.cuda_graph and not self.graphed:
            capture_cuda_graphs(model, torch.randn_like(video), self.ctx.dtype)
            self.graphed = True
            log.info("training step captured as CUDA graphs, batch %s", tuple(video.shape))
        no_sync = self.dinfo.enabled and not sync
        with model.side.no_sync() if no_sync else contextlib.nullcontext():
            with autocast(self.device, self.ctx.dtype, cache=not self.graphed):
                logits = model(video)
            loss = F.cross_entropy(
                logits.float(), labels, label_smoothing=self.cfg.optim.label_smoothing
            )
            scaled = loss / self.schedule.accumulate
            (scaler.scale(scaled) if scaler is not None else scaled).backward()
        self.state.epoch_samples += self.cfg.data.batch_size
        loss_value = loss.item()
        with torch.no_grad():
            window.add(loss_value, topk_correct(logits.detach().float(), labels), len(labels))
        return math.isfinite(loss_value)

    def input_video(self, batch: dict[str, Any]) -> torch.Tensor:
        """The batch's views on the device, uint8 (B, S, T, M, 3, H, W): moved there, or with
        ``data.augment_on=device`` made there from the decoded clips and drawn parameters."""
        if self.device_augment is None:
            return batch["video"].to(self.device, non_blocking=True)
        return self.device_augment(batch["frames"], batch["params"], self.device)

    def optimizer_step(self, nonfinite: bool) -> bool:
        """Step the optimizer and schedule, unless a rank's loss was not finite (then skip,
        and stop after ``trainer.max_nonfinite`` in a row). Returns whether any rank received
        a preemption signal (all ranks agree, so that all stop at the same step)."""
        flags = torch.tensor([float(nonfinite), float(self.preempt.received is not None)])
        distributed.all_reduce_sum(flags)
        optimizer, scaler, state = self.opt.optimizer, self.opt.scaler, self.state
        if flags[0] > 0:
            optimizer.zero_grad(set_to_none=True)
            self.count_nonfinite()
            return bool(flags[1] > 0)
        state.nonfinite_in_row = 0
        if scaler is not None:
            scaler.unscale_(optimizer)
        if self.cfg.optim.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.net.side.parameters(), self.cfg.optim.grad_clip)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        self.opt.scheduler.step()
        state.step += 1
        return bool(flags[1] > 0)

    def count_nonfinite(self) -> None:
        state = self.state
        state.nonfinite_in_row += 1
        state.nonfinite_total += 1
        log.warning(
            "non-finite loss at step %d: step skipped (%d in a row)",
            state.step,
            state.nonfinite_in_row,
        )
        if state.nonfinite_in_row >= self.tc.max_nonfinite:
            raise NonFiniteLossError(
                f"the loss was not finite for {state.nonfinite_in_row} steps in a row; "
                f"stopping. The last good checkpoint, {self.ckpt_dir / 'last.pt'}, is untouched",
                hint="try a lower optim.lr, trainer.precision=fp32 or optim.grad_clip, and "
                "check the data",
            )

    def log_step(self, window: StepWindow, epoch: float, bar: Any) -> None:
        metrics = window.metrics() | {
            "train/lr": self.opt.optimizer.param_groups[0]["lr"],
            "train/peak_mem_mb": peak_memory_mb(self.device),
            "train/epoch": epoch,
            "train/nonfinite_total": float(self.state.nonfinite_total),
        }
        self.sinks.log(metrics, self.state.step)
        bar.set_postfix(loss=f"{metrics['train/loss']:.3f}", lr=f"{metrics['train/lr']:.2e}")

    def end_epoch(self) -> None:
        """Count the epoch's bad samples, validate when due, save ``last.pt``."""
        bad = self.bad_samples.epoch_summary()
        self.bad_samples.reset_epoch()
        metrics: dict[str, float] = {"train/bad_samples": float(bad["replaced"])}
        if bad["replaced"]:
            log.warning(
                "epoch %d: %d unreadable training samples (%d videos) were replaced",
                self.state.epoch + 1,
                bad["replaced"],
                bad["bad_videos"],
            )
        self.state.epoch += 1
        self.state.epoch_samples = 0
        if self.state.epoch == self.tc.epochs or self.state.epoch % self.tc.eval_every == 0:
            metrics |= self.evaluate()
        self.sinks.log(metrics, self.state.step)
        self.save("last", self.final)

    def evaluate(self) -> dict[str, float]:
        """Validate (one view per video); ``best.pt`` when the top-1 improves."""
        result = collect_scores(self.net.eval_model, self.val_loader, device=self.device,
                                amp_dtype=self.ctx.dtype, progress=self.progress)  # fmt: skip
        report = self.val_report = result.report(self.train_set.num_classes)
        self.final = {
            "val_top1": report["top1"],
            "val_top5": report["top5"],
            "val_mean_class_acc": report["mean_class_acc"],
            "val_videos": report["num_videos"],
            "val_unreadable": report["unreadable"],
        }
        log.info(
            "epoch %d: val top1 %.2f top5 %.2f over %d videos (%d unreadable, excluded)",
            self.state.epoch,
            report["top1"],
            report["top5"],
            report["num_videos"],
            report["unreadable"],
        )
        if report["top1"] > self.state.best_top1:
            self.state.best_top1 = report["top1"]
            self.state.best_epoch = self.state.epoch
            self.save("best", self.final)
        return {f"val/{k[4:]}": float(v) for k, v in self.final.items()}

    # ---------------------------------------------------------------------- save, end
    def save(self, name: str, metrics: dict[str, float] | None = None) -> None:
        """``checkpoints/{name}.pt``, written atomically by rank 0 (every rank's RNG in it)."""
        rngs = distributed.all_gather_objects(rng_state())
        if not self.dinfo.is_main:
            return
        cfg, opt = self.cfg, self.opt
        checkpoint = {
            "format": TRAIN_FORMAT,
            "code_version": tdsclip.__version__,
            "code_revision": self.code_revision,
            "model_config": OmegaConf.to_container(cfg.model, resolve=True),
            "classes": list(self.train_set.classes),
            "side": self.net.side.state_dict(),
            "optimizer": opt.optimizer.state_dict(),
            "scheduler": opt.scheduler.state_dict(),
            "scaler": opt.scaler.state_dict() if opt.scaler is not None else None,
            "state": asdict(self.state),
            "rng": rngs,
            "config": OmegaConf.to_container(cfg, resolve=True),
            "precision": self.ctx.precision.name,
            "metrics": metrics or {},
        }
        atomic_save(checkpoint, self.ckpt_dir / f"{name}.pt")

    def stop_preempted(self) -> dict[str, Any]:
        """Save ``last.pt`` at this step boundary, then hand the signal on (e.g. submitit's
        requeue)."""
        self.save("last")
        log.warning(
            "preempted: saved %s at step %d; resume with trainer.resume=auto",
            self.ckpt_dir / "last.pt",
            self.state.step,
        )
        self.sinks.close()
        self.preempt.forward()
        return {"status": "preempted", "step": self.state.step}

    def finish(self) -> dict[str, Any]:
        """The multi-view test of ``best.pt`` (``trainer.test_after_train``), the run's
        pictures (``curves.png``, the last validation's ``confusion.png`` and
        ``per_class.png``), the summary."""
        final = dict(self.final)
        if self.tc.test_after_train:
            best = self.ckpt_dir / "best.pt"
            test = test_checkpoint(self.cfg, best, self.net.eval_model, self.ctx, self.run_dir)
            final |= test
            self.sinks.log({f"test/{k[5:]}": float(v) for k, v in test.items()}, self.state.step)
        self.sinks.close()
        if self.dinfo.is_main:
            draw_training(self.run_dir, self.val_report, self.train_set.classes,
                          title=f"{self.cfg.task_name} {self.run_dir.name}")  # fmt: skip
        final["chance"] = 100.0 / self.train_set.num_classes
        final["best_top1"] = self.state.best_top1
        final["best_epoch"] = self.state.best_epoch
        final["status"] = "finished"
        if self.dinfo.is_main:
            self.log_where_to_look()
        return final

    def log_where_to_look(self) -> None:
        """The log's last lines: where the run's results are and how to look at them."""
        run = self.run_dir
        log.info("best.pt holds epoch %d (val top1 %.2f); last.pt the last epoch; in %s",
                 self.state.best_epoch, self.state.best_top1, self.ckpt_dir)  # fmt: skip
        if self.cfg.logger.tensorboard:
            log.info("curves: tensorboard --logdir %s", run.parent.parent)
        if self.cfg.logger.jsonl:
            log.info("metrics: %s (one JSON object per line)", run / "metrics.jsonl")
        log.info(
            "test the best epoch: python -m tdsclip.eval checkpoint=%s", self.ckpt_dir / "best.pt"
        )
