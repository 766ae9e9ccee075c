"""Memory: the CPU allocator setting of training and the peak-memory reading of the metrics."""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)

# glibc mallopt() parameters (malloc.h) and the largest mmap threshold it accepts on 64-bit.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MAX_MMAP_THRESHOLD = 32 * 2**20


def keep_freed_memory() -> bool:
    """Let glibc keep freed memory for reuse instead of handing it back to the OS.

    A CPU training step allocates and frees hundreds of MB of activations. With glibc's
    defaults, large freed blocks go back to the OS (munmap, heap trimming) and return on the
    next step as page faults the kernel must zero-fill: tens of thousands per B/16 step on the
    2-core VM, 3-9% of its time. With the mmap threshold at its maximum (32 MiB) and heap
    trimming off, blocks below 32 MiB are reused. Like CUDA's caching allocator, the process
    then keeps its peak size between steps. Returns whether it took effect (glibc only).
    """
    import ctypes
    import platform

    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    ok = mallopt(_M_MMAP_THRESHOLD, _MAX_MMAP_THRESHOLD) == 1
    ok &= mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1
    if not ok:
        log.warning("glibc mallopt refused the allocator settings; keeping its defaults")
    return bool(ok)


def peak_memory_mb(device: torch.device) -> float:
    """CUDA max allocated on GPU; peak resident set size of the process on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB
