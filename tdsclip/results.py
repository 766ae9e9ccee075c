"""Runs beside the paper: `python -m tdsclip.results PATH... [--paper FILE] [--out DIR]`.

PATH is a run directory, an eval directory or a (multirun) sweep directory, searched at any
depth. Prints a Markdown table of the finished runs (their overrides that differ, top-1, top-5,
epochs, the paper's number and the difference) and lists the unfinished ones; writes
results.md, results.csv and results.png into PATH (into --out, or the common directory of
several PATHs). Exit status 1 when no run under PATH finished. `--paper` prints the paper's
numbers (tdsclip/paper.yaml) per table instead.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from tdsclip.engine.launch import compose_config
from tdsclip.report import results
from tdsclip.report.paper import load_paper

log = logging.getLogger("tdsclip.results")


def compose_plain(overrides: Sequence[str]) -> dict[str, Any]:
    """The training config of ``overrides``, resolved to plain data (for matching)."""
    return OmegaConf.to_container(compose_config(overrides), resolve=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tdsclip.results", description=__doc__)
    parser.add_argument("paths", nargs="*", type=Path, metavar="PATH")
    parser.add_argument("--paper-file", type=Path, default=None,
                        help="entries to compare with (default: tdsclip/paper.yaml)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=None, help="where to write results.*")
    parser.add_argument("--paper", action="store_true", help="print the paper's numbers")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    entries = load_paper(args.paper_file)
    if args.paper:
        sys.stdout.write(results.paper_markdown(entries))
        return 0
    if not args.paths:
        parser.error("give at least one PATH (a run, eval or sweep directory)")
    where = " ".join(str(p) for p in args.paths)
    try:
        found = results.collect(args.paths, entries, compose_plain)
    except (FileNotFoundError, NotADirectoryError) as err:
        log.error("tdsclip.results: %s", err)
        return 1
    sys.stdout.write(found.markdown())
    if not found.finished:
        what = f"{len(found.rows)} run(s), none finished" if found.rows else "no run directory"
        log.error("tdsclip.results: no finished run under %s (%s)", where, what)
        return 1
    for path in results.write(found, args.out or found.root):
        log.info("wrote %s", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
