"""Training and evaluation end to end: the default job, resume, DDP, eval, predict, sweeps."""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from data_fixtures import SYNTH
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from tdsclip.engine.launch import CONFIG_DIR, code_revision


def tiny_overrides(root: Path, out: Path, **extra: object) -> list[str]:
    base = {
        "data.root": root,
        **{f"data.synthetic.{k}": v for k, v in SYNTH.items()},
        "data.batch_size": 4,
        "data.workers": 0,
        "data.persistent_workers": False,
        "trainer.epochs": 2,
        "trainer.progress_bar": False,
        "trainer.log_every": 1,
        "trainer.threads": 1,
        "paths.output_dir": out,
        "run_id": "run",
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


def cli(module: str, args: list[str], *, nproc: int = 1, timeout: float = 300, **popen):
    """Run ``python -m module args`` (under torchrun when nproc > 1), return the result."""
    if nproc > 1:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={nproc}",
            "-m",
            module,
            *args,
        ]
    else:
        cmd = [sys.executable, "-m", module, *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False, **popen
    )


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def step_losses(path: Path) -> dict[int, float]:
    return {r["step"]: r["train/loss"] for r in read_jsonl(path) if "train/loss" in r}


def compose_train(overrides: list[str]):
    OmegaConf.register_new_resolver("run_stamp", lambda: "test", replace=True)
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    OmegaConf.resolve(cfg)
    OmegaConf.set_struct(cfg, True)
    return cfg


# --------------------------------------------------------------------------- default job
def test_default_job_end_to_end(motion_root, tmp_path):
    extra = {"trainer.epochs": 3, "optim.warmup_epochs": 1, "trainer.test_after_train": True}
    run = cli("tdsclip.train", tiny_overrides(motion_root, tmp_path, **extra))
    assert run.returncode == 0, run.stderr[-3000:]
    last = run.stdout.strip().splitlines()[-1]
    assert last.startswith("final: val_top1=") and "chance=16.67" in last, last
    run_dir = tmp_path / "default" / "run"
    ckpt = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=False)
    assert ckpt["format"] == "tdsclip.train"
    assert {
        "side",
        "optimizer",
        "scheduler",
        "scaler",
        "state",
        "rng",
        "config",
        "model_config",
        "code_version",
        "classes",
    } <= set(ckpt)
    assert ckpt["code_revision"] == code_revision()
    assert not any(k.startswith("backbone") for k in ckpt["side"])  # tower never saved
    assert ckpt["state"]["epoch"] == 3 and ckpt["state"]["step"] == 3 * 6
    assert (run_dir / "checkpoints" / "best.pt").is_file()
    assert not list((run_dir / "checkpoints").glob("*.tmp"))
    records = read_jsonl(run_dir / "metrics.jsonl")
    steps = [r for r in records if "train/loss" in r]
    assert len(steps) == 18
    for key in (
        "train/lr",
        "train/top1",
        "train/top5",
        "train/clips_per_s",
        "train/data_wait",
        "train/peak_mem_mb",
    ):
        assert key in steps[0], key
    assert any("val/top1" in r for r in records)
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    test = json.loads((run_dir / "test" / "metrics.json").read_text())  # 2 clips x 3 crops
    assert test["num_videos"] == 12 and test["unreadable"] == 0
    assert any("test/top1" in r for r in records)
    # The learning rate warms up linearly over the first epoch (6 steps), then decays.
    lrs = [r["train/lr"] for r in steps]
    assert lrs[:6] == sorted(lrs[:6]) and lrs[5] == pytest.approx(1e-3)
    assert lrs[6:] == sorted(lrs[6:], reverse=True) and lrs[-1] < 1e-3 / 10


# --------------------------------------------------------------------------- resume
# With augment_on=device the views are made in the training process, RandAugment included.
AUGMENT = {
    "worker": {},
    "device": {"data.augment_on": "device", "data.rand_augment": "rand-m7-n4-mstd0.5-inc1"},
}


@pytest.mark.parametrize("augment_on", sorted(AUGMENT))
def test_resume_after_preemption_gives_the_same_loss_curve(motion_root, tmp_path, augment_on):
    extra = {"trainer.epochs": 4, "trainer.deterministic": True, "logger.tensorboard": False}
    extra |= AUGMENT[augment_on]
    full = cli("tdsclip.train", tiny_overrides(motion_root, tmp_path / "a", **extra))
    assert full.returncode == 0, full.stderr[-3000:]
    reference = step_losses(tmp_path / "a" / "default" / "run" / "metrics.jsonl")
    assert len(reference) == 24

    args = tiny_overrides(motion_root, tmp_path / "b", **extra)
    metrics = tmp_path / "b" / "default" / "run" / "metrics.jsonl"
    cmd = [sys.executable, "-m", "tdsclip.train", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if metrics.is_file() and len(step_losses(metrics)) >= 3:
            proc.send_signal(signal.SIGTERM)  # a cluster preempting the job
            break
        time.sleep(0.02)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err.decode()[-3000:]
    assert "preempted: saved" in out.decode()  # Hydra logs to stdout
    interrupted = step_losses(metrics)
    stopped_at = max(interrupted)
    assert 3 <= stopped_at < 24, "the signal must stop the run part-way"
    ckpt = torch.load(metrics.parent / "checkpoints" / "last.pt", weights_only=False)
    assert ckpt["state"]["step"] == stopped_at

    resumed = cli("tdsclip.train", [*args, "trainer.resume=auto"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout
    curve = step_losses(metrics)
    assert sorted(curve) == list(range(1, 25))
    for step, loss in reference.items():
        assert curve[step] == pytest.approx(loss, rel=1e-6, abs=1e-7), step


# --------------------------------------------------------------------------- precision
@pytest.mark.parametrize("precision", ["fp16", "fp32"])
def test_other_precisions_train(motion_root, tmp_path, precision):
    from tdsclip.train import train

    cfg = compose_train(
        tiny_overrides(
            motion_root,
            tmp_path,
            **{"trainer.epochs": 1, "trainer.precision": precision, "logger.tensorboard": False},
        )
    )
    result = train(cfg, tmp_path / "run")
    assert result["status"] == "finished" and math.isfinite(result["val_top1"])
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=False)
    assert (ckpt["scaler"] is not None) == (precision == "fp16")  # GradScaler only for fp16


def test_gradient_accumulation_keeps_the_effective_batch(motion_root, tmp_path):
    from tdsclip.engine.setup import accumulation_steps
    from tdsclip.train import train

    assert accumulation_steps(128, 16, 8) == 1 and accumulation_steps(128, 16, 2) == 4
    with pytest.raises(ValueError, match="multiple"):
        accumulation_steps(100, 16, 2)
    cfg = compose_train(
        tiny_overrides(
            motion_root,
            tmp_path,
            **{"trainer.epochs": 1, "optim.effective_batch": 8, "logger.tensorboard": False},
        )
    )
    train(cfg, tmp_path / "run")
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=False)
    assert ckpt["state"]["step"] == 3  # 24 videos, 4 per batch, 2 batches per optimizer step


# --------------------------------------------------------------------------- non-finite
def test_nonfinite_losses_stop_the_run_and_keep_the_checkpoint(motion_root, tmp_path, monkeypatch):
    from tdsclip.engine.trainer import NonFiniteLossError
    from tdsclip.models import TDSCLIP
    from tdsclip.train import train

    overrides = tiny_overrides(motion_root, tmp_path, **{"trainer.epochs": 1})
    run_dir = tmp_path / "run"
    train(compose_train(overrides), run_dir)
    last = run_dir / "checkpoints" / "last.pt"
    digest = hashlib.sha256(last.read_bytes()).hexdigest()

    forward = TDSCLIP.forward
    monkeypatch.setattr(TDSCLIP, "forward", lambda self, v: forward(self, v) * float("nan"))
    cfg = compose_train(
        [*overrides, "trainer.epochs=2", "trainer.resume=auto", "trainer.max_nonfinite=3"]
    )
    with pytest.raises(NonFiniteLossError, match="3 steps in a row"):
        train(cfg, run_dir)
    assert hashlib.sha256(last.read_bytes()).hexdigest() == digest


# --------------------------------------------------------------------------- DDP + eval
@pytest.fixture(scope="module")
def ddp_run(motion_root, tmp_path_factory) -> Path:
    """Two gloo processes under torchrun train the tiny model."""
    out = tmp_path_factory.mktemp("ddp")
    extra = {"logger": "wandb", "logger.wandb.mode": "offline"}  # no account, no network
    run = cli("tdsclip.train", tiny_overrides(motion_root, out, **extra), nproc=2)
    assert run.returncode == 0, run.stderr[-4000:]
    assert run.stdout.count("final: val_top1=") == 1  # only rank 0 reports
    return out / "default" / "run"


def test_ddp_train_two_processes(ddp_run):
    assert sorted(p.name for p in ddp_run.parent.iterdir()) == ["run"]  # one shared run dir
    assert len(list((ddp_run / "wandb").glob("offline-run-*"))) == 1  # rank 0 only
    ckpt = torch.load(ddp_run / "checkpoints" / "last.pt", weights_only=False)
    assert len(ckpt["rng"]) == 2  # every rank's RNG state, for exact resume
    # 24 videos / (2 ranks x 4) = 3 steps per epoch; each step logged once.
    steps = [r["step"] for r in read_jsonl(ddp_run / "metrics.jsonl") if "train/loss" in r]
    assert steps == list(range(1, 7))


def _eval_list(root: Path, tmp_path: Path) -> Path:
    """7 readable validation videos and one missing file (an odd count, with a bad entry)."""
    lines = (root / "val.txt").read_text().splitlines()[:7]
    lines.append("missing/clip.mp4 0")
    ann = tmp_path / "val_odd.txt"
    ann.write_text("\n".join(lines) + "\n")
    return ann


def test_distributed_eval_counts_every_video_once(ddp_run, motion_root, tmp_path):
    ann = _eval_list(motion_root, tmp_path)
    reports = {}
    for nproc in (1, 2):
        out = tmp_path / f"eval{nproc}"
        args = [
            f"checkpoint={ddp_run / 'checkpoints' / 'last.pt'}",
            "split=test",
            "data.format=videos",
            f"data.root={motion_root}",
            f"data.train_ann={motion_root / 'train.txt'}",
            f"data.val_ann={ann}",
            f"data.labels={motion_root / 'labels.txt'}",
            "data.workers=0",
            # One video per forward in both runs, so that the per-video numbers are bitwise
            # comparable (an untrained model's near-ties would flip with other batch shapes).
            "data.batch_size=1",
            "data.num_sample=1",
            "trainer.progress_bar=false",
            f"paths.output_dir={out}",
            "run_id=e",
        ]
        run = cli("tdsclip.eval", args, nproc=nproc)
        assert run.returncode == 0, run.stderr[-4000:]
        report_dir = out / "default" / "eval" / "e"
        reports[nproc] = json.loads((report_dir / "metrics.json").read_text())
        predictions = (report_dir / "predictions.csv").read_text().splitlines()[1:]
        assert sorted(int(line.split(",")[0]) for line in predictions) == list(range(7))
        unreadable = (report_dir / "unreadable.csv").read_text().splitlines()[1:]
        assert len(unreadable) == 1 and "missing/clip.mp4" in unreadable[0]
        assert (report_dir / "confusion.csv").is_file() and (report_dir / "per_class.csv").is_file()
    assert reports[1]["num_videos"] == 7 and reports[1]["unreadable"] == 1
    assert reports[1] == reports[2]


def test_predict_prints_top5(ddp_run, motion_root):
    video = motion_root / (motion_root / "val.txt").read_text().split()[0]
    run = cli(
        "tdsclip.predict",
        [
            f"checkpoint={ddp_run / 'checkpoints' / 'best.pt'}",
            f"video={video}",
            "trainer.device=cpu",
        ],
    )
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.strip().splitlines()
    assert lines[0] == str(video)
    assert len(lines) == 6 and all(line.strip().endswith("%") for line in lines[1:])
    total = sum(float(line.split()[-1].rstrip("%")) for line in lines[1:])
    assert 0 < total <= 100.01


# --------------------------------------------------------------------------- sweeps
def test_multirun_sweep_with_self_launched_workers(motion_root, tmp_path):
    args = tiny_overrides(
        motion_root,
        tmp_path,
        **{"trainer.epochs": 1, "trainer.nproc": 2, "logger.tensorboard": False},
    )
    args = [a for a in args if not a.startswith("run_id=")]
    run = cli(
        "tdsclip.train", ["--multirun", *args, "run_id=sweep", "optim.lr=1e-3,2e-3"], timeout=600
    )
    assert run.returncode == 0, run.stderr[-4000:]
    sweep = tmp_path / "default" / "multirun" / "sweep"
    lrs = []
    for job in ("0", "1"):
        ckpt = torch.load(sweep / job / "checkpoints" / "last.pt", weights_only=False)
        assert len(ckpt["rng"]) == 2  # the job ran on two worker processes
        lrs.append(ckpt["config"]["optim"]["lr"])
    assert lrs == [1e-3, 2e-3]


def test_cuda_graph_option_says_what_it_needs(motion_root, tmp_path):
    from omegaconf import OmegaConf

    from tdsclip.engine.cuda_graphs import check_cuda_graph
    from tdsclip.engine.distributed import DistInfo
    from tdsclip.train import train

    cfg = compose_train(tiny_overrides(motion_root, tmp_path, **{"trainer.cuda_graph": True}))
    cfg.trainer.device = "cpu"
    with pytest.raises(ValueError, match="needs a CUDA device"):
        train(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()  # refused before any work
    cuda, one, eight = torch.device("cuda", 0), DistInfo(), DistInfo(world_size=8)
    tc = OmegaConf.create({"compile": False})
    check_cuda_graph(tc, cuda, one)  # one GPU: fine
    with pytest.raises(ValueError, match="single-GPU"):
        check_cuda_graph(tc, cuda, eight)
    with pytest.raises(ValueError, match="exclusive"):
        check_cuda_graph(OmegaConf.create({"compile": True}), cuda, one)
