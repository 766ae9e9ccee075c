"""``python -m tdsclip.results``: every run under some paths, beside the paper's numbers.

:func:`collect` finds and reads the runs and matches them to ``paper.yaml``;
:func:`write` puts ``results.md``, ``results.csv`` and ``results.png`` into a directory;
:func:`paper_markdown` prints the paper's entries per table.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tdsclip.report.paper import Composer, PaperEntry, PaperMatcher
from tdsclip.report.runs import find_run_dirs, read_run
from tdsclip.report.table import ResultRow, build_rows, markdown, write_csv

log = logging.getLogger(__name__)


@dataclass
class Results:
    root: Path  # the common directory of the given paths
    rows: list[ResultRow]

    @property
    def finished(self) -> list[ResultRow]:
        return [r for r in self.rows if r.run.finished]

    def markdown(self) -> str:
        return markdown(self.rows)


def common_root(paths: Sequence[str | Path]) -> Path:
    """The directory the results of ``paths`` are named against and written into."""
    resolved = [Path(p).resolve() for p in paths]
    return Path(os.path.commonpath(resolved)) if len(resolved) > 1 else resolved[0]


def collect(
    paths: Sequence[str | Path], entries: Sequence[PaperEntry], compose: Composer
) -> Results:
    """Every run at or under ``paths``, read and matched to ``entries``."""
    runs = [read_run(d) for d in find_run_dirs(paths)]
    root = common_root(paths)
    return Results(root=root, rows=build_rows(runs, PaperMatcher(entries, compose), root))


def write(results: Results, out_dir: Path) -> list[Path]:
    """``results.md``, ``results.csv`` and (with a finished run) ``results.png``."""
    from tdsclip.report.plots import plot_results

    out_dir.mkdir(parents=True, exist_ok=True)
    md = out_dir / "results.md"
    md.write_text(f"# Results under `{results.root}`\n\n" + results.markdown())
    written = [md, out_dir / "results.csv"]
    write_csv(results.rows, written[1])
    done = results.finished
    if done:
        labels = [" ".join([r.name, r.run.experiment, *r.overrides]) for r in done]
        top1 = [_plotted_top1(r) for r in done]
        paper = [r.entry.top1 if r.entry else None for r in done]
        title = "top-1 per run (on the paper's protocol where a paper entry matches)"
        written.append(plot_results(labels, top1, paper, out_dir / "results.png", title=title))
    return written


def _plotted_top1(row: ResultRow) -> float:
    """The number beside the paper's (its protocol), else the run's headline top-1."""
    if row.compared is not None:
        return row.compared
    return float(row.run.headline[1].get("top1", float("nan")))


def paper_markdown(entries: Sequence[PaperEntry]) -> str:
    """The paper's entries as one Markdown table per paper table, under its sweep command."""
    tables: dict[str, list[PaperEntry]] = {}
    for e in entries:
        tables.setdefault(e.table, []).append(e)
    blocks = []
    for table, rows in tables.items():
        presets = sorted({e.preset for e in rows if e.preset})
        command = " / ".join(f"`python -m tdsclip.train -m ablation={p}`" for p in presets)
        top5 = any(e.top5 is not None for e in rows)
        lines = [
            f"**Table {table}**" + (f": {command}" if command else ""),
            "",
            "| row | experiment | overrides | protocol | top-1 |" + (" top-5 |" if top5 else ""),
            "| --- | --- | --- | --- | ---: |" + (" ---: |" if top5 else ""),
        ]
        for e in rows:
            protocol = "test of best.pt" if e.protocol == "test" else "best val, 1 view"
            cells = [e.row, f"`{e.experiment}`", " ".join(f"`{o}`" for o in e.overrides)]
            cells += [protocol, f"{e.top1:.1f}"]
            if top5:
                cells.append("" if e.top5 is None else f"{e.top5:.1f}")
            lines.append("| " + " | ".join(cells) + " |")
        blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks)
