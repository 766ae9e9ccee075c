"""Process-level runtime settings."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import pytest

from tdsclip import runtime

CHURN = """
import resource, torch
from tdsclip import runtime
assert runtime.keep_freed_memory()
sizes_mib = (24, 8, 16, 4, 12)  # activation-like blocks under the 32 MiB mmap threshold

def churn():
    held = [torch.empty(mib * 2**18).fill_(1.0) for mib in sizes_mib]  # fp32, touched
    del held

churn()
churn()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    churn()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(faults, 5 * sum(sizes_mib) * 256)  # page faults, pages written
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc allocator settings")
def test_keep_freed_memory_reuses_freed_blocks():
    """Freed blocks stay in the process: writing the same sizes again barely faults (with
    glibc's defaults this loop faults up to every page it writes)."""
    run = subprocess.run(
        [sys.executable, "-c", CHURN], capture_output=True, text=True, timeout=120, check=False
    )
    assert run.returncode == 0, run.stderr[-2000:]
    faults, pages = map(int, run.stdout.split())
    assert faults < pages // 4


def test_code_revision_names_the_checkout():
    root = Path(runtime.__file__).resolve().parents[1]
    if not (root / ".git").exists():
        pytest.skip("tdsclip is not running from a git checkout")
    head = subprocess.run(
        ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert len(head) == 40
    assert runtime.code_revision() in (head, head + "+dirty")
