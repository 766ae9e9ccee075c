"""Pictures of runs: training curves, confusion matrix, per-class accuracy, a sweep's results.

Drawn with matplotlib's object API on the Agg canvas (no pyplot, no global figure state), so
they work headless and from any process. Each function writes one PNG and returns its path.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import PowerNorm
from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter

DPI = 100
# Up to this many classes every class is named on the axes; above, the matrix is unlabelled
# and only the most-confused pairs (and the worst/best classes) are named.
NAMED_CLASSES = 40
CELL_COUNTS = 15  # up to this many classes the matrix cells show their video counts


def new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)  # the headless canvas, attached to this figure only
    return fig


def save_figure(fig: Figure, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=DPI)
    return out


def shorten(name: str, width: int = 48) -> str:
    return name if len(name) <= width else name[: width - 1] + "…"


# ---------------------------------------------------------------------------- curves
def plot_curves(records: Sequence[dict[str, Any]], out: Path, *, title: str = "") -> Path:
    """``curves.png``: loss, learning rate and top-1 (train, val, test) of a training run.

    ``records`` are ``metrics.jsonl``'s: ``train/*`` per logged step (with the fractional
    ``train/epoch``), ``val/*`` per epoch, ``test/*`` once. The x axis is the epoch, the step
    on top.
    """
    train = [r for r in records if "train/loss" in r and "train/epoch" in r]
    epochs = [r["train/epoch"] for r in train]
    val_x, val_y = _val_points(records)
    fig = new_figure(15, 4.4)
    axes = fig.subplots(1, 3)
    _series(axes[0], epochs, [r["train/loss"] for r in train], "train loss", "C0")
    axes[0].set_ylabel("loss")
    _series(axes[1], epochs, [r["train/lr"] for r in train], "learning rate", "C2")
    axes[1].set_ylabel("learning rate")
    axes[1].yaxis.set_major_formatter(FormatStrFormatter("%.1e"))  # no offset text under "step"
    _series(axes[2], epochs, [r.get("train/top1", math.nan) for r in train], "train", "C0")
    axes[2].plot(val_x, val_y, "o-", color="C1", label="val (1 view)", markersize=4)
    tests = [r for r in records if "test/top1" in r]
    if tests:
        axes[2].axhline(tests[-1]["test/top1"], color="C3", linestyle="--",
                        label=f"test {tests[-1]['test/top1']:.2f}")  # fmt: skip
    axes[2].set_ylabel("top-1 (%)")
    axes[2].legend(loc="lower right", fontsize=9)
    steps_per_epoch = train[-1]["step"] / epochs[-1] if train and epochs[-1] > 0 else None
    for ax, name in zip(axes, ("loss", "learning rate", "top-1"), strict=True):
        ax.set_xlabel("epoch")
        ax.set_title(name)
        ax.grid(alpha=0.3)
        if steps_per_epoch:
            top = ax.secondary_xaxis(
                "top", functions=(lambda e: e * steps_per_epoch, lambda s: s / steps_per_epoch)
            )
            top.set_xlabel("step", fontsize=8)
            top.tick_params(labelsize=7)
    if not train:
        axes[0].text(0.5, 0.5, "no training step logged", ha="center", transform=axes[0].transAxes)
    fig.suptitle(title)
    return save_figure(fig, out)


def _series(ax: Any, x: Sequence[float], y: Sequence[float], label: str, color: str) -> None:
    ax.plot(x, y, color=color, label=label, linewidth=1.2)


def _val_points(records: Sequence[dict[str, Any]]) -> tuple[list[float], list[float]]:
    """(epoch, val top-1) per validation: the epoch is the last logged train/epoch before it."""
    xs, ys, epoch = [], [], 0.0
    for r in records:
        if "train/epoch" in r:
            epoch = float(r["train/epoch"])
        if "val/top1" in r and math.isfinite(r["val/top1"]):
            xs.append(round(epoch))
            ys.append(r["val/top1"])
    return xs, ys


# ------------------------------------------------------------------------- confusion
def class_order(confusion: np.ndarray) -> np.ndarray:
    """Classes by accuracy, best first (ties: most videos first), so that the hard classes
    and their confusions gather in the lower right."""
    support = confusion.sum(1)
    acc = np.divide(np.diag(confusion), support, out=np.zeros(len(support)), where=support > 0)
    return np.lexsort((-support, -acc))


def confused_pairs(confusion: np.ndarray, count: int) -> list[tuple[int, int, int]]:
    """The ``count`` largest off-diagonal cells as (true, predicted, videos), largest first."""
    off = confusion.astype(np.int64).copy()
    np.fill_diagonal(off, 0)
    flat = np.argsort(off, axis=None, kind="stable")[::-1][:count]
    pairs = [(int(i // off.shape[1]), int(i % off.shape[1])) for i in flat]
    return [(t, p, int(off[t, p])) for t, p in pairs if off[t, p] > 0]


def plot_confusion(
    confusion: np.ndarray, classes: Sequence[str], out: Path, *, title: str = "", pairs: int = 15
) -> Path:
    """``confusion.png``: the row-normalised confusion matrix, classes sorted by accuracy,
    the ``pairs`` most-confused (true, predicted) pairs numbered on it and named beside it."""
    cm = np.asarray(confusion, dtype=np.int64)
    n = len(classes)
    order = class_order(cm)
    sorted_cm = cm[np.ix_(order, order)]
    support = sorted_cm.sum(1, keepdims=True)
    rates = np.divide(sorted_cm, support, out=np.zeros(sorted_cm.shape), where=support > 0)
    fig = new_figure(19, 10) if n > CELL_COUNTS else new_figure(15, 7.5)
    grid = fig.add_gridspec(1, 2, width_ratios=[1.0, 0.9])
    ax = fig.add_subplot(grid[0])
    # A square-root scale keeps the few-percent confusions visible beside a bright diagonal.
    image = ax.imshow(rates, cmap="viridis", norm=PowerNorm(0.5, vmin=0, vmax=1),
                      interpolation="nearest")  # fmt: skip
    fig.colorbar(image, ax=ax, shrink=0.8, label="fraction of the true class's videos")
    if n <= NAMED_CLASSES:
        names = [shorten(classes[i], 32) for i in order]
        ax.set_xticks(range(n), names, rotation=90, fontsize=7)
        ax.set_yticks(range(n), names, fontsize=7)
    if n <= CELL_COUNTS:
        for (t, p), videos in np.ndenumerate(sorted_cm):
            colour = "black" if rates[t, p] > 0.5 else "white"
            ax.text(p, t, str(videos), ha="center", va="center", fontsize=9, color=colour)
    else:
        ticks = list(range(0, n, max(1, n // 10)))
        ax.set_xticks(ticks)
        ax.set_yticks(ticks)
    ax.set_xlabel(f"predicted class (rank by accuracy, {n} classes)")
    ax.set_ylabel("true class (rank by accuracy)")
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    top = confused_pairs(cm, pairs)
    lines = []
    for k, (t, p, videos) in enumerate(top, start=1):
        ax.plot(rank[p], rank[t], "o", markersize=13, markerfacecolor="none",
                markeredgecolor="red", markeredgewidth=1.5)  # fmt: skip
        ax.annotate(str(k), (rank[p], rank[t]), xytext=(7, 7), textcoords="offset points",
                    color="red", fontsize=9, fontweight="bold")  # fmt: skip
        share = 100.0 * videos / max(int(cm[t].sum()), 1)
        lines.append(f"{k:>2}. {shorten(classes[t])}\n    → {shorten(classes[p])}: "
                     f"{videos} videos ({share:.0f}% of the class)")  # fmt: skip
    text_ax = fig.add_subplot(grid[1])
    text_ax.axis("off")
    heading = f"Most-confused pairs (true → predicted), of {int(cm.sum())} videos"
    body = "\n".join(lines) if lines else "no confusions: every video is on the diagonal"
    text_ax.text(0.0, 1.0, heading + "\n\n" + body, va="top", ha="left", fontsize=10,
                 family="monospace", transform=text_ax.transAxes)  # fmt: skip
    fig.suptitle(title)
    return save_figure(fig, out)


# ------------------------------------------------------------------------- per class
def plot_per_class(
    accuracy: Sequence[float | None],
    support: Sequence[int],
    classes: Sequence[str],
    out: Path,
    *,
    title: str = "",
    worst: int = 25,
    best: int = 10,
) -> Path:
    """``per_class.png``: top-1 per class, sorted. Up to :data:`NAMED_CLASSES` classes every
    bar is named; above, all classes are drawn unnamed beside the named worst and best ones.
    Classes without videos are left out."""
    present = [i for i, a in enumerate(accuracy) if a is not None]
    present.sort(key=lambda i: (-accuracy[i], classes[i]))
    mean = float(np.mean([accuracy[i] for i in present])) if present else math.nan

    def bars(ax: Any, idx: Sequence[int], heading: str) -> None:
        ax.barh(range(len(idx)), [accuracy[i] for i in idx], color="C0")
        labels = [f"{shorten(classes[i], 44)} ({support[i]})" for i in idx]
        ax.set_yticks(range(len(idx)), labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlim(0, 100)
        ax.axvline(mean, color="C3", linestyle="--", linewidth=1)
        ax.set_title(heading, fontsize=10)
        ax.set_xlabel("top-1 (%)")
        ax.grid(axis="x", alpha=0.3)

    if len(present) <= NAMED_CLASSES:
        fig = new_figure(10, max(3.0, 1.2 + 0.24 * len(present)))
        bars(fig.add_subplot(), present, f"every class (videos), mean {mean:.1f}%")
    else:
        fig = new_figure(19, 10)
        grid = fig.add_gridspec(2, 2, width_ratios=[1.0, 1.1], height_ratios=[worst, best])
        overview = fig.add_subplot(grid[:, 0])
        overview.bar(range(len(present)), [accuracy[i] for i in present], width=1.0, color="C0")
        overview.axhline(mean, color="C3", linestyle="--", label=f"mean class accuracy {mean:.1f}%")
        overview.set_xlabel(f"class, sorted by top-1 ({len(present)} classes)")
        overview.set_ylabel("top-1 (%)")
        overview.set_ylim(0, 100)
        overview.legend(loc="upper right")
        overview.set_title("every class")
        bars(fig.add_subplot(grid[0, 1]), present[::-1][:worst], f"the {worst} worst (videos)")
        bars(fig.add_subplot(grid[1, 1]), present[:best], f"the {best} best (videos)")
    fig.suptitle(title)
    return save_figure(fig, out)


# --------------------------------------------------------------------------- results
def plot_results(
    labels: Sequence[str],
    top1: Sequence[float],
    paper: Sequence[float | None],
    out: Path,
    *,
    title: str = "",
) -> Path:
    """``results.png``: top-1 per run as bars, the paper's number as a red mark on its bar."""
    n = len(labels)
    fig = new_figure(11, 1.6 + 0.45 * n)
    ax = fig.add_subplot()
    ax.barh(range(n), top1, color="C0", label="this run")
    for i, value in enumerate(top1):
        ax.text(value, i, f" {value:.2f}", va="center", fontsize=8)
    marks = [(i, p) for i, p in enumerate(paper) if p is not None]
    if marks:
        ax.plot([p for _, p in marks], [i for i, _ in marks], "|", color="red", markersize=22,
                markeredgewidth=3, label="paper")  # fmt: skip
        for i, p in marks:
            ax.text(p, i - 0.3, f" paper {p:.1f}", color="red", fontsize=8)
    ax.set_yticks(range(n), [shorten(label, 70) for label in labels], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("top-1 (%)")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="lower right", fontsize=9)
    ax.set_title(title, fontsize=10)
    return save_figure(fig, out)
