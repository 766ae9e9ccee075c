"""The report as text: the machine it was measured on, the tables printed after a run (and by
``--from-json``), and the README's Markdown tables (``--markdown``).

``machine_info`` records the CPU, GPU, library versions and tdsclip revision; ``breakdown_row``
flattens one ``--breakdown`` child into a table row; ``format_report`` is the text printed
after every run, ``format_markdown`` the README's tables.
"""

from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path
from typing import Any

import torch

import tdsclip
from tdsclip.bench.breakdown import side_share
from tdsclip.engine.launch import code_revision


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on: CPU model, cores, GPU, library versions, and which
    tdsclip code (git commit, ``+dirty`` with uncommitted changes) was measured."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "cpu_cores": os.cpu_count(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "tdsclip": tdsclip.__version__,
        "tdsclip_revision": code_revision(),
    }


def breakdown_row(child: dict[str, Any]) -> dict[str, Any]:
    """One ``--breakdown`` child as a flat row: the step and the tower's forward, and the
    side network's share (step minus tower) in units of the tower's forward."""
    step, floor = child["step"], child["floor"]
    side = side_share(step, floor)
    return {
        "mode": child["mode"],
        "batch": child["batch"],
        "step_s": step["wall_s"],
        "backbone_s": floor["wall_s"],
        "vs_backbone": step["wall_s"] / floor["wall_s"],
        "side_matmul": side["matmul"],
        "side_optimizer": side["optimizer"],
        "side_other": side["other"],
        "side_gmac": side["gmac"],
        "side_gmac_per_s": side["gmac_per_s"],
        "backbone_gmac": floor["gmac"],
        "backbone_gmac_per_s": floor["gmac_per_s"],
        "step": step,
        "floor": floor,
    }


def _allocator(report: dict[str, Any]) -> str:
    if report.get("keep_freed_memory"):
        return "glibc keeping freed memory (trainer.cpu_keep_freed_memory), timed steps"
    return "default"


def _machine_line(report: dict[str, Any]) -> str:
    m = report.get("machine")
    if not m:
        return "machine not recorded"
    gpu = f", {m['gpu']}" if m.get("gpu") else ""
    line = f"{m['cpu']} ({m['cpu_cores']} cores{gpu}), torch {m['torch']}, Python {m['python']}"
    if m.get("tdsclip_revision"):
        sha, dirty, _ = m["tdsclip_revision"].partition("+dirty")
        line += f", tdsclip {sha[:12]}{dirty}"
    return line


_MARKDOWN_COLUMNS = [
    ("impl", "impl", "s"), ("mode", "mode", "s"), ("batch", "batch", "d"),
    ("step_s", "step s", ".3f"), ("clips_per_s", "clips/s", ".3f"),
    ("vs_backbone", "x backbone", ".2f"), ("peak_mb", "peak MB", ".0f"),
    ("mb_per_clip", "MB/clip", ".0f"),
    ("rss_mb_per_clip", "rss MB/clip", ".0f"), ("time_vs_reference", "time vs authors'", ".2f"),
    ("floor_time_vs_reference", "floor-read time vs authors'", ".2f"),
    ("mb_vs_reference", "MB/clip vs authors'", ".2f"),
    ("rss_mb_vs_reference", "rss vs authors'", ".2f"),
]  # fmt: skip


# The --breakdown table: (key, title, format).
_BREAKDOWN_COLUMNS = [
    ("mode", "mode", "s"), ("batch", "batch", "d"), ("step_s", "step s", ".3f"),
    ("backbone_s", "tower fwd s", ".3f"), ("vs_backbone", "x tower", ".2f"),
    ("side_matmul", "side matmul", ".2f"), ("side_optimizer", "side AdamW", ".2f"),
    ("side_other", "side rest", ".2f"), ("side_gmac", "side GMAC", ".1f"),
    ("side_gmac_per_s", "side GMAC/s", ".0f"), ("backbone_gmac", "tower GMAC", ".1f"),
    ("backbone_gmac_per_s", "tower GMAC/s", ".0f"),
]  # fmt: skip
_BREAKDOWN_NOTE = (
    "Breakdown (tdsclip.breakdown): one process per row, its steps and tower forwards timed "
    "alternately; the side network's time is the step minus the tower's forward, split into "
    "matrix products and AdamW (profiled self times) and the rest, in units of the tower's "
    "forward (they add up to 'x tower' - 1); GMAC/s = multiply-adds over matrix-product self "
    "time."
)


def _markdown_table(rows: list[dict[str, Any]], cols: list[tuple[str, str, str]]) -> list[str]:
    """A Markdown table of ``rows``; a column no row has a value for is left out."""
    cols = [c for c in cols if any(r.get(c[0]) is not None for r in rows)]
    lines = [
        "| " + " | ".join(title for _, title, _ in cols) + " |",
        "| " + " | ".join("---" if spec == "s" else "---:" for *_, spec in cols) + " |",
    ]
    for r in rows:
        cells = ["" if r.get(key) is None else format(r[key], spec) for key, _, spec in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _text_table(rows: list[dict[str, Any]], cols: list[tuple[str, str, str]]) -> list[str]:
    """Aligned columns: text left, numbers right; '-' where a row has no value."""
    table = [[title for _, title, _ in cols]]
    for r in rows:
        table.append(["-" if r.get(k) is None else format(r[k], spec) for k, _, spec in cols])
    widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
    lines = []
    for n, row in enumerate(table):
        cells = [
            cell.ljust(w) if spec == "s" else cell.rjust(w)
            for cell, w, (_, _, spec) in zip(row, widths, cols, strict=True)
        ]
        lines.append("  ".join(cells))
        if n == 0:
            lines.append("-" * len(lines[-1]))
    return lines


def format_markdown(report: dict[str, Any]) -> str:
    """The report as the Markdown table the README shows, with the machine it came from."""
    names = {"ours": "tdsclip", "reference": "authors'", "finetune": "full fine-tune"}
    lines = [
        f"Machine: {_machine_line(report)}; {report['threads']} threads, "
        f"{report['precision']}, experiment {report['experiment'] or 'default'}, "
        f"allocator {_allocator(report)}.",
        "",
    ]
    rows = [{**r, "impl": names.get(r["impl"], r["impl"])} for r in report["runs"]]
    lines += _markdown_table(rows, _MARKDOWN_COLUMNS)
    if report.get("breakdown"):
        table = _markdown_table(report["breakdown"], _BREAKDOWN_COLUMNS)
        lines += ["", _BREAKDOWN_NOTE, "", *table]
    return "\n".join(lines)


def format_report(report: dict[str, Any]) -> str:
    p, f = report["params"], report["tflops_per_view"]
    paper = f"{f['paper']:.1f}" if f["paper"] is not None else "n/a"
    lines = [
        f"experiment {report['experiment'] or 'default'} {' '.join(report['overrides'])}",
        f"machine {_machine_line(report)}",
        f"device {report['device']} ({report['threads']} threads), precision "
        f"{report['precision']}"
        + (f" ({report['precision_reason']})" if report.get("precision_reason") else ""),
        f"allocator {_allocator(report)}",
        f"parameters: trainable {p['trainable']:,}, frozen {p['frozen']:,}",
        f"TFLOPs per view (multiply-adds): ours {f['ours']:.3f}, paper {paper}",
        "",
    ]
    # (key, title, format); text columns are left-aligned, numbers right-aligned.
    cols = [
        ("impl", "impl", "s"), ("mode", "mode", "s"), ("batch", "batch", "d"),
        ("step_s", "step s", ".3f"), ("clips_per_s", "clips/s", ".3f"),
        ("backbone_s", "backbone s", ".3f"), ("vs_backbone", "x backbone", ".2f"),
        ("peak_mb", "peak MB", ".0f"), ("mb_per_clip", "MB/clip", ".0f"),
        ("saved_mb_per_clip", "saved MB/clip", ".0f"),
        ("time_vs_reference", "time vs ref", ".2f"),
        ("floor_time_vs_reference", "floor-read vs ref", ".2f"),
        ("mb_vs_reference", "MB/clip vs ref", ".2f"),
        ("rss_mb_per_clip", "rss MB/clip", ".0f"),
        ("rss_mb_vs_reference", "rss vs ref", ".2f"),
    ]  # fmt: skip
    lines += _text_table(report["runs"], cols)
    lines.append("")
    for r in report.get("inference", []):
        lines.append(
            f"inference {r['impl']}/{r['mode']}: {r['views']} views per video, "
            f"{r['video_s']:.3f} s per video, {r['clips_per_s']:.2f} clips/s"
        )
    if report.get("breakdown"):
        lines += ["", _BREAKDOWN_NOTE, *_text_table(report["breakdown"], _BREAKDOWN_COLUMNS)]
    return "\n".join(lines)
