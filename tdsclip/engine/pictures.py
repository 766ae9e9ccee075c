"""Pictures of a run, drawn by rank 0: ``curves.png`` and the last validation's
``confusion.png`` and ``per_class.png`` at the end of training, the same two for every
evaluation report. Drawing is :mod:`tdsclip.report.plots`; a picture that fails is logged and
skipped, never fatal: the metrics and checkpoints it would show are already on disk.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def _drawn(name: str, draw: Callable[[], Path]) -> Path | None:
    try:
        return draw()
    except Exception as err:  # a picture must not cost a finished run its exit status
        log.warning("could not draw %s: %s: %s", name, type(err).__name__, err)
        return None


def draw_report(
    out_dir: Path, report: dict[str, Any], classes: Sequence[str], *, title: str
) -> list[Path]:
    """``confusion.png`` and ``per_class.png`` of an evaluation report (rank 0 only)."""
    from tdsclip.report import plots

    confusion = report.get("confusion")
    if confusion is None:  # no readable video: nothing to draw
        return []
    cm = confusion.cpu().numpy() if hasattr(confusion, "cpu") else confusion
    drawn = [
        _drawn("confusion.png", lambda: plots.plot_confusion(
            cm, classes, out_dir / "confusion.png", title=f"{title}: confusion matrix")),
        _drawn("per_class.png", lambda: plots.plot_per_class(
            report["per_class_acc"], cm.sum(1).tolist(), classes, out_dir / "per_class.png",
            title=f"{title}: top-1 per class")),
    ]  # fmt: skip
    return [p for p in drawn if p is not None]


def draw_training(
    run_dir: Path, val_report: dict[str, Any] | None, classes: Sequence[str], *, title: str
) -> list[Path]:
    """``curves.png`` from the run's ``metrics.jsonl``, and the last validation's pictures."""
    from tdsclip.report import plots
    from tdsclip.report.runs import read_jsonl

    metrics = run_dir / "metrics.jsonl"
    drawn = []
    if metrics.is_file():
        curves = _drawn("curves.png", lambda: plots.plot_curves(
            read_jsonl(metrics), run_dir / "curves.png", title=title))  # fmt: skip
        drawn += [curves] if curves else []
    if val_report is not None:
        drawn += draw_report(run_dir, val_report, classes, title=f"{title}, last validation")
    if drawn:
        log.info("pictures: %s", ", ".join(p.name for p in drawn))
    return drawn
