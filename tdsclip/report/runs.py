"""Finding runs on disk and reading what they measured.

A run directory is any directory with ``.hydra/config.yaml``: a training run
(``outputs/<task>/<run_id>/``, a multirun job ``.../multirun/<run_id>/<n>/``) or an
evaluation (``outputs/<task>/eval/<run_id>/``). Training runs are read from
``metrics.jsonl`` (``train/*`` per logged step, ``val/*`` per epoch, ``test/*`` after
``trainer.test_after_train``), evaluations from ``metrics.json``.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

from tdsclip.report.paper import DEFAULT_EXPERIMENT

log = logging.getLogger(__name__)

FINISHED = "finished"
# Folders of a run that hold no other run: not walked.
_SKIP_DIRS = {".hydra", "checkpoints", "tensorboard", "wandb", "test"}


@dataclass
class Run:
    """One run directory and what it measured (percent values)."""

    path: Path
    kind: str  # "train" | "eval"
    experiment: str
    preset: str | None  # configs/ablation preset of the sweep that made it
    overrides: list[str]
    config: DictConfig
    status: str = FINISHED  # finished | unfinished | preempted
    detail: str = ""  # why a run is not finished
    epochs_done: int | None = None
    epochs: int | None = None
    val: dict[str, float] = field(default_factory=dict)  # the last validation: top1, top5
    best_val_top1: float | None = None
    test: dict[str, float] = field(default_factory=dict)  # multi-view test: top1, top5
    views: str = ""  # the test views, e.g. "3x2" (crops x clips)

    @property
    def finished(self) -> bool:
        return self.status == FINISHED

    @property
    def headline(self) -> tuple[str, dict[str, float]]:
        """What the run reports first: its test metrics if any, else its last validation."""
        if self.test:
            return f"test {self.views}", self.test
        return "val 1 view", self.val

    def value(self, key: str) -> Any:
        """The run's config value at ``key`` as plain data (None when absent/unresolvable)."""
        try:
            node = OmegaConf.select(self.config, key, throw_on_resolution_failure=True)
        except Exception:  # an interpolation this process cannot resolve (e.g. run_stamp)
            return None
        if OmegaConf.is_config(node):
            return OmegaConf.to_container(node, resolve=True)
        return node


def find_run_dirs(paths: Sequence[str | Path]) -> list[Path]:
    """Every run directory at or under ``paths`` (any depth), sorted naturally."""
    found: list[Path] = []
    for root in paths:
        root = Path(root).resolve()
        if not root.exists():
            raise FileNotFoundError(f"{root}: no such file or directory")
        if not root.is_dir():
            raise NotADirectoryError(f"{root}: expected a run, eval or sweep directory")
        found.extend(_walk(root))
    return sorted(dict.fromkeys(found), key=_natural)


def _walk(directory: Path) -> Iterable[Path]:
    if (directory / ".hydra" / "config.yaml").is_file():
        yield directory
        return  # a run holds no other run
    for child in sorted(directory.iterdir()):
        if child.is_dir() and not child.is_symlink() and child.name not in _SKIP_DIRS:
            yield from _walk(child)


def _natural(path: Path) -> list[Any]:
    """Sort key that puts job 2 before job 10."""
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in path.parts]


def read_run(path: Path) -> Run:
    """A run directory's config, provenance and metrics."""
    hydra_dir = path / ".hydra"
    config = OmegaConf.load(hydra_dir / "config.yaml")
    choices = _hydra_choices(hydra_dir / "hydra.yaml")
    overrides_file = hydra_dir / "overrides.yaml"
    overrides = yaml.safe_load(overrides_file.read_text()) if overrides_file.is_file() else []
    is_eval = "checkpoint" in config and "split" in config
    run = Run(
        path=path,
        kind="eval" if is_eval else "train",
        experiment=choices.get("experiment") or DEFAULT_EXPERIMENT,
        preset=choices.get("ablation"),
        overrides=[str(o) for o in overrides or []],
        config=config,
    )
    run.views = f"{_int(run.value('data.test_crops'))}x{_int(run.value('data.test_clips'))}"
    if is_eval:
        _read_eval(run)
    else:
        _read_training(run)
    return run


def _hydra_choices(path: Path) -> dict[str, Any]:
    """The config group choices Hydra recorded (``experiment``, ``ablation``, ...)."""
    if not path.is_file():
        return {}
    hydra = yaml.safe_load(path.read_text()) or {}
    return dict(hydra.get("hydra", {}).get("runtime", {}).get("choices", {}) or {})


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) else None


def _read_eval(run: Run) -> None:
    metrics_file = run.path / "metrics.json"
    if not metrics_file.is_file():
        run.status, run.detail = "unfinished", "no metrics.json: crashed or still running"
        return
    metrics = json.loads(metrics_file.read_text())
    values = {"top1": float(metrics["top1"]), "top5": float(metrics["top5"])}
    if run.value("split") == "test":
        run.test = values
    else:
        run.val, run.best_val_top1 = values, values["top1"]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl``; a torn last line (a run killed mid-write) is
    skipped."""
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            log.warning("%s: skipped a line that is not JSON", path)
    return records


def _read_training(run: Run) -> None:
    run.epochs = _int(run.value("trainer.epochs"))
    metrics_file = run.path / "metrics.jsonl"
    records = read_jsonl(metrics_file) if metrics_file.is_file() else []
    # One record per finished epoch (Trainer.end_epoch); the step tells resumed copies apart.
    run.epochs_done = len({r["step"] for r in records if "train/bad_samples" in r})
    vals = [r for r in records if _finite(r.get("val/top1"))]
    if vals:
        run.val = {"top1": vals[-1]["val/top1"], "top5": vals[-1].get("val/top5", math.nan)}
        run.best_val_top1 = max(r["val/top1"] for r in vals)
    tests = [r for r in records if _finite(r.get("test/top1"))]
    if tests:
        run.test = {"top1": tests[-1]["test/top1"], "top5": tests[-1].get("test/top5", math.nan)}
    wants_test = bool(run.value("trainer.test_after_train"))
    if run.epochs is not None and run.epochs_done >= run.epochs and (run.test or not wants_test):
        return
    run.status = "preempted" if _preempted(run.path / "train.log") else "unfinished"
    done = f"{run.epochs_done}/{run.epochs if run.epochs is not None else '?'} epochs"
    if not records:
        run.detail = f"{done}, no metrics yet: crashed or still running (see train.log)"
    elif run.status == "preempted":
        run.detail = f"{done}: preempted; continue with trainer.resume=auto"
    elif run.epochs_done >= (run.epochs or 0) and wants_test:
        run.detail = f"{done}, no test metrics: the test crashed or is running"
    else:
        run.detail = f"{done}: crashed or still running (see train.log)"


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _preempted(log_file: Path) -> bool:
    """Whether the run's last log lines say it stopped on a preemption signal."""
    if not log_file.is_file():
        return False
    tail = log_file.read_text(errors="replace").splitlines()[-5:]
    return any("preempted: saved" in line for line in tail)
