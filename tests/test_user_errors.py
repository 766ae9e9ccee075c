"""User mistakes through the real CLI: one or two lines naming what is wrong and what to do,
exit code 2 (1 for a run that failed while running), no traceback, nothing overwritten, no
empty run directory left behind."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_train import cli, tiny_overrides

from tdsclip.engine.cli import exit_on_error
from tdsclip.errors import ConfigError, RunError, UserError


def assert_user_error(run: subprocess.CompletedProcess, *needles: str, code: int = 2) -> None:
    output = run.stdout + run.stderr
    assert run.returncode == code, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    for needle in needles:
        assert needle in run.stderr, (needle, run.stderr[-3000:])
    # What the user reads: at most two lines from tdsclip (logs of the run aside).
    ours = [line for line in run.stderr.splitlines() if not line.startswith("[")]
    assert 1 <= len(ours) <= 2, ours


def no_run_dirs(out: Path) -> bool:
    """Nothing but empty folders under ``out`` (a failed start leaves no run directory)."""
    return not out.exists() or not any(p.is_file() for p in out.rglob("*"))


@pytest.fixture(scope="module")
def trained(motion_root, tmp_path_factory) -> Path:
    """One finished tiny run: its run directory."""
    out = tmp_path_factory.mktemp("trained")
    run = cli("tdsclip.train", tiny_overrides(motion_root, out, **{"trainer.epochs": 2}))
    assert run.returncode == 0, run.stderr[-3000:]
    run_dir = out / "default" / "run"
    last = run.stdout.strip().splitlines()[-1]
    assert last.startswith("final: val_top1=") and f"run_dir={run_dir}" in last, last
    assert " best_epoch=" in last and " best_top1=" in last
    assert f"tensorboard --logdir {out}" in run.stdout and "metrics.jsonl" in run.stdout
    return run_dir


# ------------------------------------------------------------------------- config values
@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("model.side.dim=0", "model.side.dim: got 0; it must be an integer >= 1"),
        ("data.batch_size=-1", "data.batch_size: got -1; it must be an integer >= 1"),
    ],
)
def test_bad_config_values_name_the_key(motion_root, tmp_path, override, needle):
    run = cli("tdsclip.train", [*tiny_overrides(motion_root, tmp_path), override], timeout=120)
    assert_user_error(run, needle)
    assert no_run_dirs(tmp_path)


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("optim.label_smoothing=1.5", r"optim\.label_smoothing: got 1\.5; it must be a number in"),
        ("data.flip=mirror", r"data\.flip: got 'mirror'; it must be one of none, plain"),
        ("model.side.heads=3", r"is not divisible by model\.side\.heads=3"),
        ("trainer.precision=bf17", r"trainer\.precision: got 'bf17'"),
        ("optim.betas=[0.9,1.5]", r"optim\.betas: .* two numbers in \[0, 1\)"),
        ("data.rand_augment=randaug-m9", r"data\.rand_augment: 'randaug-m9' is not"),
        ("model.side.td_reduction=100", r"model\.side\.td_reduction: 100 leaves no channel"),
    ],
)
def test_every_value_is_checked_before_anything_is_built(override, needle):
    from test_train import compose_train

    from tdsclip.engine.validation import validate_config

    validate_config(compose_train([]))  # the default job is valid
    with pytest.raises(ConfigError, match=needle):
        validate_config(compose_train([override]))


def test_unknown_key_suggests_the_near_one(tmp_path):
    run = cli("tdsclip.train", ["trainer.epoch=3", f"paths.output_dir={tmp_path}"], timeout=120)
    assert_user_error(run, "trainer.epoch: no such config key", "did you mean trainer.epochs?")
    assert not any(tmp_path.iterdir())  # refused before Hydra made a run directory


@pytest.mark.parametrize(
    ("config", "args", "needle"),
    [
        ("train", ["experiment=ssv2_b16"], "did you mean experiment=ssv2_b16_8f?"),
        ("train", ["model.sid.dim=3"], "did you mean model.side.dim?"),
        ("train", ["-m", "trainer.epohcs=1,2"], "did you mean trainer.epochs?"),
        ("train", ["data=videos"], "data.num_classes: is required"),
        ("eval", ["split=test"], "checkpoint: is required"),
    ],
)
def test_the_command_line_is_checked_before_hydra_runs(config, args, needle):
    from tdsclip.engine.cli import check_command_line
    from tdsclip.engine.launch import CONFIG_DIR

    fine = {"train": ["trainer.epochs=2"], "eval": ["checkpoint=best.pt", "split=test"]}
    check_command_line(CONFIG_DIR, config, fine[config])
    with pytest.raises(UserError) as info:
        check_command_line(CONFIG_DIR, config, args)
    assert needle in f"{info.value.message}\n{info.value.hint}"


def test_verbose_shows_the_traceback(tmp_path):
    run = cli("tdsclip.train", ["model.side.dim=0", f"paths.output_dir={tmp_path}", "--verbose"])
    assert run.returncode == 2
    assert "Traceback" in run.stderr and "model.side.dim" in run.stderr


# ----------------------------------------------------------------------------- data
def test_missing_dataset_names_the_keys_and_the_docs(tmp_path):
    videos = tmp_path / "ssv2" / "videos"
    videos.mkdir(parents=True)  # an empty folder where the videos should be
    out = tmp_path / "out"
    args = ["experiment=ssv2_b16_8f", f"data.root={videos}", "model.backbone.pretrained=null",
            "trainer.device=cpu", f"paths.output_dir={out}"]  # fmt: skip
    run = cli("tdsclip.train", args, timeout=180)
    # The list file follows data.root: it is looked for beside the videos' folder.
    expected = tmp_path / "ssv2" / "something-something-v2-train.json"
    assert_user_error(run, f"data.train_ann: {expected} not found", "data.root",
                      "docs/datasets.md#something-something-v2")  # fmt: skip
    assert no_run_dirs(out)


def test_a_174_class_experiment_on_a_3_class_list(motion_root, tmp_path):
    paths = [line.split()[0] for line in (motion_root / "train.txt").read_text().splitlines()]
    (tmp_path / "list.txt").write_text("".join(f"{p} {i % 3}\n" for i, p in enumerate(paths)))
    (tmp_path / "labels.txt").write_text("pushing\npulling\nlifting\n")
    args = tiny_overrides(motion_root, tmp_path / "out", **{
        "data.format": "videos", "data.train_ann": tmp_path / "list.txt",
        "data.val_ann": tmp_path / "list.txt", "data.labels": tmp_path / "labels.txt",
        "data.num_classes": 174, "data.synthetic": "null",
    })  # fmt: skip
    args = [a for a in args if not a.startswith("data.synthetic.")]
    run = cli("tdsclip.train", args, timeout=120)
    assert_user_error(run, "data.num_classes: 174, but the annotations define 3 classes")
    assert no_run_dirs(tmp_path / "out")


def test_missing_clip_weights_say_where_to_put_them(motion_root, tmp_path):
    weights = tmp_path / "weights" / "ViT-B-16.pt"
    args = [*tiny_overrides(motion_root, tmp_path / "out"), f"model.backbone.pretrained={weights}"]
    run = cli("tdsclip.train", args, timeout=120)
    assert_user_error(run, f"pretrained CLIP weights not found at {weights}", "never downloads")
    assert no_run_dirs(tmp_path / "out")


# ----------------------------------------------------------------------- checkpoints
def truncated_copy(src: Path, dst: Path) -> Path:
    dst.write_bytes(src.read_bytes()[: src.stat().st_size // 3])
    return dst


def test_truncated_checkpoints_name_the_file_and_the_way_out(trained, motion_root, tmp_path):
    bad = truncated_copy(trained / "checkpoints" / "best.pt", tmp_path / "cut.pt")
    video = next(motion_root.rglob("*.mp4"))
    for module, args in (
        ("tdsclip.eval", [f"checkpoint={bad}", f"paths.output_dir={tmp_path}/eval"]),
        ("tdsclip.predict", [f"checkpoint={bad}", f"video={video}"]),
    ):
        run = cli(module, args, timeout=120)
        assert_user_error(run, f"{bad} cannot be read", "best.pt")
    # trainer.resume=auto on a run whose last.pt was cut short (a crash mid-copy, say)
    out = tmp_path / "resume"
    run_dir = out / "default" / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    truncated_copy(trained / "checkpoints" / "last.pt", run_dir / "checkpoints" / "last.pt")
    args = [*tiny_overrides(motion_root, out), "trainer.resume=auto"]
    run = cli("tdsclip.train", args, timeout=120)
    assert_user_error(run, "last.pt cannot be read", "best.pt")


def test_a_missing_checkpoint(tmp_path):
    run = cli("tdsclip.eval", [f"checkpoint={tmp_path}/nope.pt", f"paths.output_dir={tmp_path}"])
    assert_user_error(run, f"checkpoint not found: {tmp_path}/nope.pt")
    run = cli("tdsclip.eval", [f"paths.output_dir={tmp_path}"])
    assert_user_error(run, "checkpoint: is required", "checkpoint=")


def test_a_text_file_named_mp4_given_to_predict(trained, tmp_path):
    fake = tmp_path / "notes.mp4"
    fake.write_text("this is not a video\n")
    run = cli("tdsclip.predict", [f"checkpoint={trained / 'checkpoints' / 'best.pt'}",
                                  f"video={fake}"])  # fmt: skip
    assert_user_error(run, f"{fake}: ")
    assert "video_reader.cc" not in run.stderr and "moov atom" not in run.stderr


def test_predict_and_eval_refuse_a_label_list_that_does_not_fit_the_model(motion_root, tmp_path):
    from test_train import compose_train

    from tdsclip.engine.checkpoint import save_model_file
    from tdsclip.models import build_model

    cfg = compose_train(tiny_overrides(motion_root, tmp_path, **{"data.num_classes": 7}))
    model_cfg = {**cfg.model, "num_classes": 7}
    save_model_file(tmp_path / "m.pt", build_model(model_cfg), model_config=model_cfg)
    video = next(motion_root.rglob("*.mp4"))
    data = [a for a in tiny_overrides(motion_root, tmp_path) if a.startswith("data.")]
    args = [f"checkpoint={tmp_path / 'm.pt'}", f"video={video}", *data]
    run = cli("tdsclip.predict", args, timeout=120)
    assert_user_error(run, "the model predicts 7 classes but the data config's label file "
                      "names 6")  # fmt: skip
    out = tmp_path / "eval"
    args = [f"checkpoint={tmp_path / 'm.pt'}", "split=val", *data, f"paths.output_dir={out}"]
    run = cli("tdsclip.eval", args, timeout=120)
    assert_user_error(run, "predicts 7 classes, the val data has 6", "trained on")
    assert no_run_dirs(out)


def test_convert_says_what_it_expected_and_what_it_found(tmp_path):
    torch.save({"state_dict": {"backbone.weight": torch.zeros(2)}}, tmp_path / "other.pt")
    run = subprocess.run(
        [sys.executable, "-m", "tdsclip.convert", str(tmp_path / "other.pt"), str(tmp_path / "o")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert_user_error(run, "is not an authors' TDS-CLIP checkpoint", "expected {'model_state_dict'",
                      "found 1 keys such as state_dict")  # fmt: skip
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------- run dirs
def fingerprint(run_dir: Path) -> dict[str, str]:
    return {
        str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(run_dir.rglob("*"))
        if p.is_file()
    }


def test_a_reused_run_id_never_overwrites_a_run(trained, motion_root):
    before = fingerprint(trained)
    out = trained.parent.parent
    for extra in ([], ["--multirun", "trainer.eval_every=1,2"]):
        args = [*extra, *tiny_overrides(motion_root, out)]
        if extra:  # a sweep of the same run_id: its job folders hold checkpoints too
            (out / "default" / "multirun" / "run" / "0" / "checkpoints").mkdir(parents=True)
            (out / "default" / "multirun" / "run" / "0" / "checkpoints" / "last.pt").touch()
        run = cli("tdsclip.train", args, timeout=120)
        assert_user_error(run, "already holds a run's checkpoints",
                          "resume with trainer.resume=auto, or choose another run_id")  # fmt: skip
    assert fingerprint(trained) == before


def test_the_same_refusal_inside_a_run(trained):
    from tdsclip.engine.cli import check_not_overwriting

    with pytest.raises(UserError, match="already holds a run's checkpoints"):
        check_not_overwriting(trained / "checkpoints", None)
    check_not_overwriting(trained / "checkpoints", "auto")  # resuming is what it is for


# ------------------------------------------------------------------------ exit codes
@pytest.mark.parametrize(
    ("error", "code"),
    [(ConfigError("a.b", "bad"), 2), (UserError("x", hint="y"), 2), (RunError("failed"), 1)],
)
def test_exit_codes(error, code, capsys):
    with pytest.raises(SystemExit) as exit_info, exit_on_error("prog"):
        raise error
    assert exit_info.value.code == code
    err = capsys.readouterr().err
    assert err.startswith("prog: error: ") and len(err.splitlines()) == (2 if error.hint else 1)


def test_programming_errors_keep_their_traceback():
    with pytest.raises(ZeroDivisionError), exit_on_error("prog"):
        1 / 0  # noqa: B018
