"""paper.yaml: every entry composes and builds, every sweep preset runs exactly its table, the
paper's numbers live nowhere else, and the README lists them as paper.yaml says."""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from tdsclip.engine.launch import CONFIG_DIR, compose_config
from tdsclip.models import build_model
from tdsclip.report.paper import PaperEntry, PaperMatcher, default_paper_file, load_paper
from tdsclip.report.results import paper_markdown

ROOT = Path(__file__).resolve().parents[1]
ENTRIES = load_paper()
PRESETS = sorted(p.stem for p in (Path(CONFIG_DIR) / "ablation").glob("*.yaml"))
# A stand-in tower of the real depth and patch grid: the side network is built at full size.
TOWERS = {"ViT-B-16": (16, 12), "ViT-L-14": (14, 24)}


def plain(overrides: list[str]) -> dict:
    cfg = OmegaConf.to_container(compose_config(overrides), resolve=True)
    cfg.pop("task_name")  # a preset names its sweep's output folder
    return cfg


def recipe(overrides: list[str]) -> str:
    """The config as JSON, less what a preset adds to it: its output folder's name and the
    test after training (checked against the entries' protocol on its own)."""
    cfg = plain(overrides)
    cfg["trainer"].pop("test_after_train")
    return json.dumps(cfg, sort_keys=True)


def test_paper_yaml_ships_with_the_package():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "paper.yaml" in pyproject["tool"]["setuptools"]["package-data"]["tdsclip"]
    assert default_paper_file() == ROOT / "tdsclip" / "paper.yaml"


def test_paper_yaml_holds_every_table():
    tables = {e.table for e in ENTRIES}
    assert tables == {"1", "2", "3a", "3b", "3c", "3d", "3e", "3f", "4"}
    assert all(e.top5 is not None for e in ENTRIES if e.table in ("1", "2"))
    assert {e.protocol for e in ENTRIES if e.table in ("1", "2")} == {"test"}
    assert {e.protocol for e in ENTRIES if e.table not in ("1", "2")} == {"val"}
    assert len([e for e in ENTRIES if e.table == "4"]) == 4


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.id)
def test_every_entry_composes_and_builds(entry: PaperEntry):
    cfg = compose_config(entry.command())  # struct mode: a misspelt key fails here
    OmegaConf.resolve(cfg)
    assert cfg.task_name == entry.experiment
    model_cfg = OmegaConf.to_container(cfg.model)
    patch, layers = TOWERS[model_cfg["backbone"]["name"]]
    model_cfg["backbone"].update(
        name=None, pretrained=None, patch_size=patch, layers=layers, width=64, heads=2
    )
    model = build_model(model_cfg)  # a bad value (td_kind=maxpol, M=1 with SME) fails here
    side = model.side
    assert side.dim == cfg.model.side.dim
    assert (side.stem.motion_conv is not None) == cfg.model.side.sme
    assert side.stem.num_local_frames == cfg.data.num_local_frames


def _cells(preset: str) -> list[list[str]]:
    """The jobs of ``-m ablation=<preset>``: the product of its sweeper params."""
    text = (Path(CONFIG_DIR) / "ablation" / f"{preset}.yaml").read_text()
    params = yaml.safe_load(text)["hydra"]["sweeper"]["params"]
    choices = [[f"{k}={v}" for v in str(values).split(",")] for k, values in params.items()]
    return [list(job) for job in itertools.product(*choices)]


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_runs_exactly_its_table(preset):
    entries = [e for e in ENTRIES if e.preset == preset]
    assert entries, f"no paper.yaml entry names preset {preset}"
    expected = {e.id: recipe(e.command()) for e in entries}
    jobs = _cells(preset)
    assert len(jobs) == len(entries)
    tests = {e.protocol == "test" for e in entries}
    assert len(tests) == 1  # one protocol per table
    for job in jobs:
        assert plain([f"ablation={preset}", *job])["trainer"]["test_after_train"] in tests
        got = recipe([f"ablation={preset}", *job])
        same = [i for i, cfg in expected.items() if cfg == got]
        assert len(same) == 1, f"{preset} job {job} matches entries {same}"
        expected.pop(same[0])
    assert not expected, f"{preset} runs no job for {sorted(expected)}"


def test_every_entry_has_a_preset():
    assert {e.preset for e in ENTRIES} == set(PRESETS)


def test_the_matcher_tells_cells_apart_and_prefers_the_preset_table():
    matcher = PaperMatcher(ENTRIES, lambda overrides: plain(list(overrides)))

    def match(overrides: list[str], **kw) -> PaperEntry | None:
        cfg = plain(["experiment=ssv1_b16_8f", *overrides])
        values = {k: OmegaConf.select(OmegaConf.create(cfg), k) for k in matcher.keys}
        values = {k: OmegaConf.to_container(v) if OmegaConf.is_config(v) else v
                  for k, v in values.items()}  # fmt: skip
        return matcher.match("ssv1_b16_8f", values, **kw)

    full = ["model.side.motion_weight=1.0"]
    assert match([*full, "model.side.td_kind=conv"]).id == "td_kind_conv"
    assert match([*full, "model.side.td_kernel=9"]) is None  # no such cell
    no_sme = [*full, "model.side.sme=false", "data.num_local_frames=1"]
    assert match(no_sme, preset="local_frames").id == "local_frames_1"
    assert match(no_sme, preset="td_layers").id == "td_layers_1_12"
    assert match([], has_test=True).id == "ssv1_b16_8f"  # the experiment's own row, Tab. 1
    assert match([]).id == "fusion_0.5"  # without a test: the single-view cell at 0.5


def test_no_paper_number_outside_paper_yaml():
    numbers = {f"{v:.1f}" for e in ENTRIES for v in (e.top1, e.top5) if v is not None}
    pattern = re.compile(r"(?<![\d.])(" + "|".join(re.escape(n) for n in numbers) + r")(?![\d])")
    files = [*ROOT.glob("tdsclip/**/*.py"), *ROOT.glob("tdsclip/**/*.yaml"),
             *ROOT.glob("configs/**/*.yaml")]  # fmt: skip
    found = [
        f"{path.relative_to(ROOT)}:{i}: {line.strip()}"
        for path in files
        if path.name != "paper.yaml"
        for i, line in enumerate(path.read_text().splitlines(), start=1)
        if pattern.search(line)
    ]
    assert not found, "\n".join(found)


def test_readme_lists_the_paper_numbers_of_paper_yaml():
    """Each table of `python -m tdsclip.results --paper` stands in the README as printed."""
    readme = (ROOT / "README.md").read_text()
    blocks = paper_markdown(ENTRIES).split("\n\n**Table ")
    assert len(blocks) == 9
    for block in blocks:
        assert block.removeprefix("**Table ").strip() in readme, block[:60]
    for preset in PRESETS:
        assert f"python -m tdsclip.train -m ablation={preset}" in readme


def test_readme_gpu_hours_are_what_the_script_prints():
    """The README's GPU-hours table is scripts/gpu_hours.py's output for the committed H200
    report, with epochs, clips and test views read from each experiment's config."""
    script = ROOT / "scripts" / "gpu_hours.py"
    report = ROOT / "docs" / "benchmarks" / "ssv2_b16_8f_h200.json"
    run = subprocess.run([sys.executable, str(script), str(report)], capture_output=True,
                         text=True, check=True, cwd=ROOT)  # fmt: skip
    rows = [line for line in run.stdout.splitlines() if line.startswith("| `")]
    assert len(rows) == 9
    readme = (ROOT / "README.md").read_text()
    for row in rows:
        assert row in readme, row


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda e: e.update(protocl="val"), "unknown keys"),
        (lambda e: e.update(protocol="multi"), "protocol must be"),
        (lambda e: e.pop("top1"), "lacks"),
        (lambda e: e.update(top1="sixty"), "must be a number"),
        (lambda e: e.update(overrides=["model.side.dim"]), "without '='"),
    ],
)
def test_bad_entries_fail_loudly(tmp_path, edit, message):
    raw = yaml.safe_load(default_paper_file().read_text())
    edit(raw["entries"][3])
    bad = tmp_path / "paper.yaml"
    bad.write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError, match=message):
        load_paper(bad)


def test_duplicate_ids_fail(tmp_path):
    raw = yaml.safe_load(default_paper_file().read_text())
    raw["entries"].append(dict(raw["entries"][0]))
    bad = tmp_path / "paper.yaml"
    bad.write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError, match="duplicate entry ids"):
        load_paper(bad)
