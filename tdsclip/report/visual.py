"""The picture of ``python -m tdsclip.visualize``: a video's frames, where TDS-CLIP's motion
path responds on them, and the model's top classes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tdsclip.report.plots import new_figure, save_figure, shorten

_ROWS = (
    ("frames", "the centre frame of each segment (what the frozen CLIP tower sees)"),
    ("motion", "SME-Adapter motion branch: RMS of its tokens per patch"),
    ("gate", "TD-Adapter gate: mean |sigmoid(y) - 0.5| per patch, over channels and TD layers"),
)


def plot_motion_maps(
    frames: np.ndarray,
    top: Sequence[tuple[str, float]],
    motion: np.ndarray | None,
    gate: np.ndarray | None,
    out: Path,
    *,
    title: str = "",
) -> Path:
    """Frames (T, H, W, 3) uint8 in the first row; the motion-branch and TD-gate maps
    (T, g, g) over grey copies of them in the next two; the top classes as bars on the
    right."""
    t, h, w = frames.shape[:3]
    fig = new_figure(2.0 * t + 6.0, 7.8)
    left, right = fig.subfigures(1, 2, width_ratios=[2.0 * t + 0.6, 5.4])
    # The maps go over grey frames, so that their colours read as the response alone.
    grey = frames.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    maps = {"motion": motion, "gate": gate}
    absent = {"motion": " (this model has no SME-Adapter)", "gate": " (no TD-Adapter)"}
    for (name, caption), sub in zip(_ROWS, left.subfigures(3, 1), strict=True):
        heat = maps.get(name)
        note = absent[name] if name in absent and heat is None else ""
        sub.suptitle(caption + note, x=0.01, ha="left", fontsize=9)
        axes = sub.subplots(1, t + 1, width_ratios=[1.0] * t + [0.08])
        # One scale per row, from its smallest to its largest value, so that frames compare.
        vmin, vmax = (float(heat.min()), float(heat.max())) if heat is not None else (0.0, 1.0)
        vmax = max(vmax, vmin + 1e-12)
        image = None
        for i, ax in enumerate(axes[:t]):
            if name == "frames":
                ax.imshow(frames[i])
                ax.set_title(f"segment {i + 1}", fontsize=9)
            else:
                ax.imshow(grey[i], cmap="gray", vmin=0, vmax=255)
            if heat is not None and name != "frames":
                # The (g, g) map stretched over the frame: one square per patch.
                image = ax.imshow(heat[i], cmap="inferno", alpha=0.65, vmin=vmin, vmax=vmax,
                                  extent=(0, w, h, 0), interpolation="bilinear")  # fmt: skip
            ax.set_xticks([])
            ax.set_yticks([])
        axes[0].set_ylabel(name, fontsize=10)
        if image is not None:
            sub.colorbar(image, cax=axes[t])
        else:
            axes[t].axis("off")
    ax = right.add_subplot()
    names = [shorten(name, 40) for name, _ in top]
    ax.barh(range(len(top)), [100.0 * p for _, p in top], color="C0")
    for i, (_, p) in enumerate(top):
        ax.text(100.0 * p, i, f" {100.0 * p:.1f}%", va="center", fontsize=9)
    ax.set_yticks(range(len(top)), names, fontsize=9)
    ax.invert_yaxis()
    ax.set_xlim(0, 115)
    ax.set_xlabel("probability (%)")
    ax.set_title(f"top-{len(top)} classes of this view", fontsize=10)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, out)
