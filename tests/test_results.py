"""From runs to tables and pictures, end to end on real tiny runs: a sweep made by a preset,
`tdsclip.results` beside a paper entry, the PNGs of training and evaluation, `visualize`, and the
README's "Your own videos" walk-through."""

from __future__ import annotations

import csv
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from test_train import cli, read_jsonl, tiny_overrides

from tdsclip.engine.launch import compose_config
from tdsclip.report.paper import default_paper_file
from tdsclip.report.table import COLUMNS

ROOT = Path(__file__).resolve().parents[1]
TITLES = [title for title, _ in COLUMNS]
# What the toy preset sweeps, like configs/ablation/*.yaml do for the paper's tables.
TOY_PRESET = """\
# @package _global_
task_name: ablation_toy
hydra:
  sweeper:
    params:
      model.side.td_kind: maxpool,direct
"""
TOY_ENTRY = {
    "id": "toy_direct",
    "table": "toy",
    "row": "direct",
    "preset": "toy",
    "experiment": "default",
    "overrides": ["model.side.td_kind=direct"],
    "protocol": "val",
    "top1": 50.0,
}


@pytest.fixture(scope="module")
def sweep(motion_root, tmp_path_factory) -> Path:
    """`python -m tdsclip.train -m ablation=toy`: 2 jobs (td_kind maxpool, direct), 2 epochs
    each and the multi-view test of best.pt, from a preset on Hydra's search path."""
    tmp = tmp_path_factory.mktemp("sweep")
    (tmp / "configs" / "ablation").mkdir(parents=True)
    (tmp / "configs" / "ablation" / "toy.yaml").write_text(TOY_PRESET)
    extra = {"trainer.test_after_train": True, "optim.warmup_epochs": 1, "run_id": "sweep"}
    args = [
        "-m",
        "ablation=toy",
        f"hydra.searchpath=[file://{tmp / 'configs'}]",
        *tiny_overrides(motion_root, tmp / "out", **extra),
    ]
    run = cli("tdsclip.train", args, timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]
    return tmp / "out" / "ablation_toy" / "multirun" / "sweep"


def table_rows(markdown: str) -> dict[str, dict[str, str]]:
    """The Markdown table's rows by run name: {run: {column title: cell}}."""
    rows = {}
    for line in markdown.splitlines():
        if line.startswith("| `"):
            cells = [c.strip() for c in line.strip("|").split(" | ")]
            assert len(cells) == len(TITLES), line
            rows[cells[0].strip("`")] = dict(zip(TITLES, cells, strict=True))
    return rows


def assert_png(path: Path, min_size: tuple[int, int] = (600, 250)) -> None:
    """A real PNG of a sensible size (no empty canvas, no runaway figure)."""
    assert path.is_file(), path
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG"
        w, h = image.size
        assert min_size[0] <= w <= 4000 and min_size[1] <= h <= 4000, (path, image.size)
        pixels = np.asarray(image.convert("L"), dtype=np.float32)
        assert pixels.std() > 5, f"{path} is blank"


def paper_with_toy(tmp_path: Path) -> Path:
    raw = yaml.safe_load(default_paper_file().read_text())
    raw["entries"].append(TOY_ENTRY)
    path = tmp_path / "paper.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


# ------------------------------------------------------------------------------ results
def test_results_lines_up_a_sweep_with_the_paper(sweep, tmp_path):
    run = cli("tdsclip.results", [str(sweep), "--paper-file", str(paper_with_toy(tmp_path))])
    assert run.returncode == 0, run.stderr[-3000:]
    rows = table_rows(run.stdout)
    assert sorted(rows) == ["0", "1"]
    for job, kind in (("0", "maxpool"), ("1", "direct")):
        row = rows[job]
        records = read_jsonl(sweep / job / "metrics.jsonl")
        test = [r for r in records if "test/top1" in r][-1]
        best = max(r["val/top1"] for r in records if "val/top1" in r)
        assert row["experiment"] == "default"
        assert row["overrides"] == f"`model.side.td_kind={kind}`"  # only what differs
        assert row["epochs"] == "2"
        assert row["measured on"] == "test 3x2"
        assert row["top-1"] == f"{test['test/top1']:.2f}"
        assert row["top-5"] == f"{test['test/top5']:.2f}"
        assert row["best val top-1"] == f"{best:.2f}"
    assert rows["0"]["paper"] == rows["0"]["paper top-1"] == rows["0"]["Δ top-1"] == ""
    direct_best = float(rows["1"]["best val top-1"])
    assert rows["1"]["paper"] == "Tab. toy direct"
    assert rows["1"]["paper top-1"] == "50.0"
    assert rows["1"]["Δ top-1"] == f"{direct_best - 50.0:+.2f}"  # the paper's protocol: val

    assert table_rows((sweep / "results.md").read_text()) == rows
    with (sweep / "results.csv").open() as f:
        lines = list(csv.DictReader(f))
    assert [r["run"] for r in lines] == ["0", "1"]
    assert {r["status"] for r in lines} == {"finished"}
    assert lines[1]["paper_id"] == "toy_direct" and lines[0]["paper_id"] == ""
    assert_png(sweep / "results.png", min_size=(600, 150))


def test_results_lists_unfinished_runs_and_fails_without_a_finished_one(sweep, tmp_path):
    from tdsclip.results import main

    copy = tmp_path / "sweep"
    shutil.copytree(sweep, copy, ignore=shutil.ignore_patterns("*.pt", "tensorboard"))
    metrics = copy / "1" / "metrics.jsonl"  # job 1 stopped in its second epoch
    records = read_jsonl(metrics)
    first_epoch_end = next(i for i, r in enumerate(records) if "train/bad_samples" in r)
    metrics.write_text("".join(json.dumps(r) + "\n" for r in records[: first_epoch_end + 3]))
    crashed = copy / "2"  # a job that crashed before its first step: config and log only
    shutil.copytree(copy / "0" / ".hydra", crashed / ".hydra")

    assert main([str(copy)]) == 0  # job 0 finished
    text = (copy / "results.md").read_text()
    assert sorted(table_rows(text)) == ["0"]
    assert "- `1` (default `model.side.td_kind=direct`): unfinished, 1/2 epochs" in text
    assert "- `2` (default" in text and "no metrics yet" in text
    with (copy / "results.csv").open() as f:
        status = {r["run"]: r["status"] for r in csv.DictReader(f)}
    assert status == {"0": "finished", "1": "unfinished", "2": "unfinished"}

    shutil.rmtree(copy / "0")
    run = cli("tdsclip.results", [str(copy)])
    assert run.returncode == 1
    assert f"no finished run under {copy}" in run.stderr
    missing = tmp_path / "nowhere"
    run = cli("tdsclip.results", [str(missing)])
    assert run.returncode == 1 and str(missing) in run.stderr


# ----------------------------------------------------------------------------- pictures
def test_every_job_draws_its_pictures(sweep):
    for job in ("0", "1"):
        for name in ("curves.png", "confusion.png", "per_class.png"):
            assert_png(sweep / job / name)
        for name in ("confusion.png", "per_class.png"):  # the multi-view test's report
            assert_png(sweep / job / "test" / name)


def test_eval_draws_its_pictures_and_results_reads_it(sweep, motion_root, tmp_path):
    args = [
        f"checkpoint={sweep / '1' / 'checkpoints' / 'best.pt'}",
        "split=test",
        "model.side.td_kind=direct",  # the checkpoint's switch, so that results can match it
        *tiny_overrides(motion_root, tmp_path / "out", **{"run_id": "e"}),
    ]
    run = cli("tdsclip.eval", args)
    assert run.returncode == 0, run.stderr[-3000:]
    eval_dir = tmp_path / "out" / "default" / "eval" / "e"
    for name in ("confusion.png", "per_class.png"):
        assert_png(eval_dir / name)
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    run = cli("tdsclip.results", [str(eval_dir)])
    assert run.returncode == 0, run.stderr[-3000:]
    row = table_rows(run.stdout)["e"]
    assert row["top-1"] == f"{metrics['top1']:.2f}" and row["measured on"] == "test 3x2"


def test_pictures_for_174_classes_stay_readable(tmp_path):
    from tdsclip.report.plots import confused_pairs, plot_confusion, plot_per_class

    gen = torch.Generator().manual_seed(0)
    classes = [f"Pretending to put something {i} next to something" for i in range(174)]
    cm = torch.randint(0, 3, (174, 174), generator=gen) + torch.diag(torch.full((174,), 20))
    cm[5, 9] = 40  # the most confused pair
    pairs = confused_pairs(cm.numpy(), 15)
    assert pairs[0] == (5, 9, 40) and len(pairs) == 15
    assert all(t != p for t, p, _ in pairs)
    acc = (100.0 * cm.diag() / cm.sum(1)).tolist()
    assert_png(plot_confusion(cm.numpy(), classes, tmp_path / "c.png"), min_size=(1500, 800))
    assert_png(plot_per_class(acc, cm.sum(1).tolist(), classes, tmp_path / "p.png"), (1500, 800))


# ---------------------------------------------------------------------------- visualize
def test_visualize_draws_the_default_jobs_checkpoint(sweep, motion_root, tmp_path):
    checkpoint = sweep / "0" / "checkpoints" / "best.pt"  # the default job (td_kind maxpool)
    video = motion_root / (motion_root / "val.txt").read_text().split()[0]
    out = tmp_path / "vis.png"
    run = cli("tdsclip.visualize", [f"checkpoint={checkpoint}", f"video={video}", f"out={out}"])
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip() == str(out)
    assert_png(out, min_size=(1200, 500))


def test_visualize_maps_come_from_the_motion_path(sweep, motion_root):
    from tdsclip.engine.visualization import motion_maps

    checkpoint = sweep / "0" / "checkpoints" / "best.pt"
    video = motion_root / (motion_root / "val.txt").read_text().split()[0]
    cfg = compose_config([f"checkpoint={checkpoint}", f"video={video}"], "visualize")
    maps = motion_maps(cfg)
    ckpt = torch.load(checkpoint, weights_only=False)
    t, size = ckpt["config"]["data"]["num_frames"], ckpt["config"]["data"]["input_size"]
    grid = size // ckpt["model_config"]["backbone"]["patch_size"]
    assert maps.frames.shape == (t, size, size, 3)
    assert maps.motion.shape == maps.gate.shape == (t, grid, grid)
    assert (maps.motion >= 0).all() and maps.motion.max() > 0
    assert (maps.gate >= 0).all() and (maps.gate < 0.5).all()  # |sigmoid - 0.5|
    assert len(maps.top) == 5 and 0 < sum(p for _, p in maps.top) <= 1.0 + 1e-6


def test_motion_hooks_record_the_sme_branch_and_the_td_gates():
    from conftest import tiny_model, tiny_video

    from tdsclip.engine.visualization import capture_motion

    model = tiny_model().eval()
    video = tiny_video(batch=1)
    logits, motion, gate = capture_motion(model, video)
    torch.testing.assert_close(logits, model(video))
    stem, g = model.side.stem, model.side.grid_size
    frames = video.float()
    diffs = (frames[:, :, 1:] - frames[:, :, :-1]).flatten(2, 3)
    branch = stem.motion_weight * stem.motion_norm(stem.motion_conv(diffs))  # (1, T, N, d)
    expected = branch[0].square().mean(-1).sqrt().unflatten(1, (g, g))
    torch.testing.assert_close(motion, expected.detach())
    assert gate.shape == expected.shape and (gate > 0).all()
    _, motion, gate = capture_motion(tiny_model(sme=False, td_layers=[]).eval(), video)
    assert motion is None and gate is None


def test_the_picture_says_when_a_model_has_no_motion_path(tmp_path):
    from tdsclip.report.visual import plot_motion_maps

    frames = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    top = [("a", 0.5), ("b", 0.3)]
    out = plot_motion_maps(frames, top, None, None, tmp_path / "v.png", title="no SME, no TD")
    assert_png(out, min_size=(900, 500))


# --------------------------------------------------------------------- your own videos
def readme_section(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]


def test_your_own_videos_walkthrough(motion_root, tmp_path):
    """The README's walk-through, run as written (the model and sizes made toy)."""
    section = readme_section("Your own videos")
    make_lists = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    commands = re.search(r"```bash\n(.*?)```", section, re.S).group(1).replace("\\\n", " ")
    for i, video in enumerate(sorted(motion_root.glob("*/*/*.mp4"))):  # a folder per class
        cls = ["left", "right", "down", "up", "smaller", "bigger"][int(video.parent.name)]
        target = tmp_path / "my_videos" / cls / f"clip_{i:03d}.mp4"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(video, target)
    lists = subprocess.run(
        [sys.executable, "-c", make_lists], cwd=tmp_path, capture_output=True, text=True
    )
    assert lists.returncode == 0, lists.stderr
    assert "6 classes, 30 train and 6 val videos" in lists.stdout
    toy = [
        "data.input_size=48",
        "data.resize=56",
        "data.batch_size=4",
        "data.workers=0",
        "data.persistent_workers=false",
        "data.num_sample=1",
        "trainer.epochs=2",
        "trainer.progress_bar=false",
        "trainer.threads=1",
    ]
    video = next((tmp_path / "my_videos" / "up").iterdir())
    for line in commands.strip().splitlines():
        words = shlex.split(line)
        assert words[:2] == ["python", "-m"], line
        module, args = words[2], words[3:]
        if module == "tdsclip.train":  # the tiny default model instead of ViT-B/16
            args = [a for a in args if not a.startswith(("model=", "trainer.epochs="))] + toy
        if module in ("tdsclip.visualize", "tdsclip.predict"):
            args = [f"video={video}" if a.startswith("video=") else a for a in args]
        run = cli(module, args, cwd=tmp_path)
        assert run.returncode == 0, f"{line}\n{run.stderr[-3000:]}"
        if module == "tdsclip.results":
            assert list(table_rows(run.stdout)) == ["first"]
        if module == "tdsclip.predict":
            assert len(run.stdout.strip().splitlines()) == 6  # the video, then 5 classes
    run_dir = tmp_path / "outputs" / "my_videos" / "first"
    assert (run_dir / "results.md").is_file() and (run_dir / "checkpoints" / "best.pt").is_file()
    assert_png(run_dir / "curves.png")
