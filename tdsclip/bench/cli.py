"""Cost of a configured TDS-CLIP: parameters, FLOPs, training step, memory, inference.

    python -m tdsclip.benchmark --experiment ssv2_b16_8f --batch-sizes 1 2 --json bench.json
    python -m tdsclip.benchmark --reference-repo /scratch/TDS-CLIP   # time the authors' model too

Random weights at full size; nothing is downloaded or read besides the configs. Every
(implementation, mode, batch size) is measured in fresh child processes so that the peak
memory of one cannot hide in another's: CUDA max-allocated on a GPU, peak RSS on the CPU.
On the CPU the peak RSS is measured twice: in the timing child, whose allocator is set as
``python -m tdsclip.train`` sets it (``trainer.cpu_keep_freed_memory``: freed memory kept for
reuse; ``--default-allocator`` times with glibc's defaults instead) ("rss" columns, which
include the heap's high-water mark and vary by tens of MB from run to run), and in a second
child with glibc's ``MALLOC_MMAP_THRESHOLD_`` fixed at 64 KiB, so that
every freed tensor goes back to the OS at once and the RSS follows the live tensors, the
closest CPU analogue of CUDA's max-allocated ("peak MB", "MB/clip" columns).
``--reference-repo`` points at a local checkout of the authors' code (BBYL9413/TDS-CLIP);
their ``clip/model.py`` is imported from there at run time, never copied into tdsclip.
``--full-finetune`` adds the same CLIP tower fully fine-tuned (frame-mean pooling, linear
head), the baseline whose memory a frozen tower avoids. On a GPU, ``--modes cuda_graph`` times
the training step as ``trainer.cuda_graph=true`` runs it (forward and backward replayed as CUDA
graphs; its saved-activation column stays empty, the graph's pool holds them, and its peak
memory is counted from before the capture, which allocates that pool).

Printed: a table per implementation and batch size, with the training step time, clips/s,
the frozen backbone's forward alone on the same input (the floor: our tower, timed in the
same processes, alternating with the training steps; the reference's processes build a copy
of our tower for it) and the ratio to it, the peak memory and its growth per extra clip, and
(with a reference) the ratios to the authors': of the median step times ("time vs ref") and
of the steps read against their own processes' floors ("floor-read vs ref", which a machine
that runs some processes 5-10% slower than others does not move). The "rss" columns come
from the timing processes; only their growth per clip is compared, since the reference's
copy of our tower adds the same offset at every batch size. Every configuration runs in
``--rounds`` interleaved child processes; times are medians over all of them.
``--from-json`` prints a saved report again; ``--markdown`` adds the README's table.

This module is the command line (``python -m tdsclip.benchmark`` calls ``main``); the rest of
``tdsclip.bench`` measures and reports (see its package docstring).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from tdsclip.bench.child import child_main
from tdsclip.bench.report import format_markdown, format_report
from tdsclip.bench.runner import benchmark
from tdsclip.engine.precision import PRECISIONS

log = logging.getLogger(__name__)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--experiment",
        default="ssv2_b16_8f",
        help="configs/experiment name; '' for the default job's tiny model",
    )
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2])
    parser.add_argument(
        "--modes",
        nargs="+",
        default=["default", "checkpointing"],
        choices=["default", "checkpointing", "compile", "cuda_graph"],
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--precision",
        default="auto",
        choices=list(PRECISIONS),
        help="auto (default): bf16 where the device computes it natively, as training picks",
    )
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per child")
    parser.add_argument(
        "--rounds", type=int, default=2, help="children per configuration, interleaved"
    )
    parser.add_argument(
        "--reference-repo",
        type=Path,
        default=None,
        help="local checkout of BBYL9413/TDS-CLIP to time beside ours",
    )
    parser.add_argument(
        "--full-finetune",
        action="store_true",
        help="also measure the same CLIP tower fully fine-tuned (frame-mean pooling, linear "
        "head): the memory and time that freezing the tower saves",
    )
    parser.add_argument(
        "--default-allocator",
        action="store_true",
        help="CPU: time with glibc's defaults instead of trainer.cpu_keep_freed_memory",
    )
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="CPU: also profile one child per mode and batch size: the step's and the "
        "tower's time in matrix products, the optimizer and the rest (tdsclip.breakdown)",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the report here")
    parser.add_argument(
        "--markdown", action="store_true", help="also print the table as Markdown (README)"
    )
    parser.add_argument(
        "--from-json",
        type=Path,
        default=None,
        help="print a saved report (from --json) instead of measuring",
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. data.num_frames=16")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        child_main(argv[1], Path(argv[2]))
        return
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    report = json.loads(args.from_json.read_text()) if args.from_json else benchmark(args)
    sys.stdout.write(format_report(report) + "\n")
    if args.markdown:
        sys.stdout.write("\n" + format_markdown(report) + "\n")
    if args.json and not args.from_json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        log.info("wrote %s", args.json)
