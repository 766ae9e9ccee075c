"""Runs side by side with the paper: rows, the Markdown table and the CSV file."""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from tdsclip.report.paper import PaperEntry, PaperMatcher, override_key
from tdsclip.report.runs import Run

# Overrides that never tell runs apart in a name (where things are, which process count).
_PLUMBING = ("experiment", "ablation", "run_id", "paths.", "hydra.")

DELTA_NOTE = (
    "Δ top-1: the run minus the paper on the paper's protocol: the multi-view test of best.pt "
    "for Tables 1-2, the best single-view validation top-1 for Tables 3-4."
)


@dataclass
class ResultRow:
    """A run, how it is named in the table, and the paper entry it reproduces."""

    run: Run
    name: str  # its directory, relative to the common root of the given paths
    overrides: list[str]  # the overrides that tell it apart from the other runs
    entry: PaperEntry | None

    @property
    def compared(self) -> float | None:
        """The run's top-1 on the entry's protocol."""
        if self.entry is None:
            return None
        if self.entry.protocol == "test":
            return self.run.test.get("top1")
        return self.run.best_val_top1

    @property
    def delta(self) -> float | None:
        if self.entry is None or self.compared is None or not math.isfinite(self.compared):
            return None
        return self.compared - self.entry.top1


def build_rows(runs: Sequence[Run], matcher: PaperMatcher, root: Path) -> list[ResultRow]:
    """One row per run, named relative to ``root``, matched to the paper."""
    differing = differing_overrides(runs)
    rows = []
    for run in runs:
        values = {k: run.value(k) for k in matcher.keys}
        entry = matcher.match(run.experiment, values, preset=run.preset, has_test=bool(run.test))
        name = os.path.relpath(run.path, root) if run.path != root else run.path.name
        rows.append(ResultRow(run=run, name=name, overrides=differing[run.path], entry=entry))
    return rows


def differing_overrides(runs: Sequence[Run]) -> dict[Path, list[str]]:
    """Per run, its overrides whose value is not the same in every run (all of its own
    overrides but the plumbing when it is alone)."""

    def parsed(run: Run) -> dict[str, str]:
        keyed = {override_key(o): o for o in run.overrides}
        return {k: o for k, o in keyed.items() if not k.startswith(_PLUMBING)}

    table = {run.path: parsed(run) for run in runs}
    keys = {k for overrides in table.values() for k in overrides}
    if len(runs) > 1:
        keys = {k for k in keys if len({_value(o.get(k)) for o in table.values()}) > 1}
    return {path: [o[k] for k in o if k in keys] for path, o in table.items()}


def _value(override: str | None) -> str | None:
    """An override's value as YAML reads it, so that ``False`` and ``false`` are one value."""
    if override is None or "=" not in override:
        return override
    text = override.split("=", 1)[1]
    try:
        return repr(yaml.safe_load(text))
    except yaml.YAMLError:
        return text


def _num(value: float | None, signed: bool = False) -> str:
    if value is None or not math.isfinite(value):
        return ""
    return f"{value:+.2f}" if signed else f"{value:.2f}"


def _code(items: Sequence[str]) -> str:
    return " ".join(f"`{i}`" for i in items)


# Column title, right-aligned (numbers).
COLUMNS = (
    ("run", False),
    ("experiment", False),
    ("overrides", False),
    ("epochs", True),
    ("top-1", True),
    ("top-5", True),
    ("measured on", False),
    ("best val top-1", True),
    ("paper", False),
    ("paper top-1", True),
    ("Δ top-1", True),
)


def _cells(r: ResultRow) -> list[str]:
    metric, values = r.run.headline
    return [
        f"`{r.name}`",
        r.run.experiment,
        _code(r.overrides),
        "" if r.run.epochs_done is None else str(r.run.epochs_done),
        _num(values.get("top1")),
        _num(values.get("top5")),
        metric,
        _num(r.run.best_val_top1),
        r.entry.label if r.entry else "",
        f"{r.entry.top1:.1f}" if r.entry else "",
        _num(r.delta, signed=True),
    ]


def markdown(rows: Sequence[ResultRow]) -> str:
    """The finished runs as a Markdown table, then the runs that did not finish."""
    done = [r for r in rows if r.run.finished]
    text = ""
    if done:
        lines = [
            "| " + " | ".join(title for title, _ in COLUMNS) + " |",
            "| " + " | ".join("---:" if right else "---" for _, right in COLUMNS) + " |",
        ]
        for r in done:
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in _cells(r)) + " |")
        text = "\n".join(lines) + "\n"
        if any(r.entry for r in done):
            text += f"\n{DELTA_NOTE}\n"
    pending = [r for r in rows if not r.run.finished]
    if pending:
        text += "\nNot finished (left out of the table):\n\n" if done else "Not finished:\n\n"
        for r in pending:
            extra = f" {_code(r.overrides)}" if r.overrides else ""
            text += f"- `{r.name}` ({r.run.experiment}{extra}): {r.run.status}, {r.run.detail}\n"
    return text


CSV_COLUMNS = (
    "run", "experiment", "overrides", "status", "detail", "epochs_done", "epochs",
    "val_top1", "val_top5", "best_val_top1", "test_top1", "test_top5", "test_views",
    "paper_id", "paper_table", "paper_row", "paper_protocol", "paper_top1", "paper_top5",
    "delta_top1", "path",
)  # fmt: skip


def write_csv(rows: Sequence[ResultRow], path: Path) -> None:
    """Every run, finished or not, one line each."""
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        for r in rows:
            run, e = r.run, r.entry
            writer.writerow([
                r.name, run.experiment, " ".join(r.overrides), run.status, run.detail,
                run.epochs_done if run.epochs_done is not None else "",
                run.epochs if run.epochs is not None else "",
                _num(run.val.get("top1")), _num(run.val.get("top5")), _num(run.best_val_top1),
                _num(run.test.get("top1")), _num(run.test.get("top5")),
                run.views if run.test else "",
                e.id if e else "", e.table if e else "", e.row if e else "",
                e.protocol if e else "", e.top1 if e else "",
                "" if e is None or e.top5 is None else e.top5,
                _num(r.delta, signed=True), str(run.path),
            ])  # fmt: skip
