"""Process-level settings: allocator, code revision, precision, threads."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tdsclip.engine import launch, precision, threads

CHURN = """
import resource, torch
from tdsclip.engine.memory import keep_freed_memory
assert keep_freed_memory()
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
    root = Path(launch.__file__).resolve().parents[2]
    if not (root / ".git").exists():
        pytest.skip("tdsclip is not running from a git checkout")
    head = subprocess.run(
        ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert len(head) == 40
    assert launch.code_revision() in (head, head + "+dirty")


# ---------------------------------------------------------------------------- precision
def _cpu_units(monkeypatch, *, amx: bool, avx512_bf16: bool, onednn: bool = True) -> None:
    """Pretend to be an x86 CPU with (or without) bf16 units."""
    monkeypatch.setattr(precision.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: onednn)


@pytest.mark.parametrize(
    ("amx", "avx512_bf16", "onednn", "expected"),
    [
        (True, True, True, "bf16"),  # Sapphire Rapids and later
        (False, True, True, "bf16"),  # Zen 4, Cooper Lake
        (False, False, True, "fp32"),  # AVX2 or AVX-512 without bf16: emulated, slow
        (True, True, False, "fp32"),  # oneDNN capped below its bf16 ISA
    ],
)
def test_auto_precision_on_the_cpu_follows_its_bf16_units(
    monkeypatch, amx, avx512_bf16, onednn, expected
):
    _cpu_units(monkeypatch, amx=amx, avx512_bf16=avx512_bf16, onednn=onednn)
    chosen = precision.resolve_precision("auto", torch.device("cpu"))
    assert chosen.name == expected
    assert chosen.reason.startswith("auto: ")
    assert ("AVX512-BF16" in chosen.reason) == (avx512_bf16 or not (amx or avx512_bf16))
    assert chosen.dtype == {"bf16": torch.bfloat16, "fp32": None}[expected]
    assert not chosen.needs_scaler


def test_explicit_precision_wins_and_bf16_on_an_emulating_cpu_warns(monkeypatch, caplog):
    _cpu_units(monkeypatch, amx=False, avx512_bf16=False)
    cpu = torch.device("cpu")
    for name in ("fp32", "fp16"):
        assert precision.resolve_precision(name, cpu).name == name
    assert precision.resolve_precision("fp16", cpu).needs_scaler
    with caplog.at_level("WARNING", logger="tdsclip.engine.precision"):
        chosen = precision.resolve_precision("bf16", cpu)
    assert chosen.name == "bf16" and chosen.reason == "set by trainer.precision"
    assert "auto would pick fp32" in caplog.text
    with pytest.raises(ValueError, match=r"trainer\.precision: must be one of"):
        precision.resolve_precision("bfloat16", cpu)


@pytest.mark.parametrize(("native", "expected"), [(True, "bf16"), (False, "fp16")])
def test_auto_precision_on_a_gpu(monkeypatch, native, expected):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Test GPU")
    asked = {}

    def is_bf16_supported(including_emulation: bool = True) -> bool:
        asked["emulation"] = including_emulation
        return native

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    chosen = precision.resolve_precision("auto", torch.device("cuda", 0))
    assert chosen.name == expected and chosen.needs_scaler == (expected == "fp16")
    assert asked == {"emulation": False}  # emulated bf16 does not count
    assert "Test GPU" in chosen.reason


# ------------------------------------------------------------------------------ threads
@pytest.mark.parametrize(
    ("cores", "workers", "processes", "main"),
    [(2, 0, 1, 2), (2, 1, 1, 1), (2, 2, 1, 1), (16, 4, 1, 12), (16, 3, 2, 5), (8, 2, 8, 1)],
)
def test_threads_never_exceed_the_cores(monkeypatch, cores, workers, processes, main):
    monkeypatch.setattr(threads, "available_cores", lambda: cores)
    plan = threads.plan_threads(None, num_workers=workers, local_processes=processes)
    assert plan.main == main and plan.workers == workers
    # Each process's threads fit its share, unless one thread is all it has.
    assert plan.main + workers <= max(cores // processes, 1 + workers)
    assert f"{cores} core(s)" in plan.describe()


def test_threads_from_the_config_win(monkeypatch):
    monkeypatch.setattr(threads, "available_cores", lambda: 2)
    assert threads.plan_threads(6, num_workers=2).main == 6
    with pytest.raises(ValueError, match=r"trainer\.threads"):
        threads.plan_threads(0, num_workers=2)


def test_available_cores_follow_the_affinity_mask_and_the_cgroup_quota(monkeypatch):
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setattr(threads, "_cgroup_cpu_quota", lambda: None)
    assert threads.available_cores() == 4
    monkeypatch.setattr(threads, "_cgroup_cpu_quota", lambda: 2.5)
    assert threads.available_cores() == 2
    monkeypatch.setattr(threads, "_cgroup_cpu_quota", lambda: 0.5)
    assert threads.available_cores() == 1
