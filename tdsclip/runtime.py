"""Run-time plumbing shared by the entry points: config location, devices, precision,
logging, resolvers, RNG state and preemption signals."""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import random
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf

from tdsclip import distributed

log = logging.getLogger(__name__)

CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "configs")

AMP_DTYPES: dict[str, torch.dtype | None] = {
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
    "fp32": None,
}


@cache
def code_revision() -> str | None:
    """The git commit of the tdsclip checkout in use, ``+dirty`` when its tracked files differ
    from that commit; None outside a git checkout (an installed wheel) or without git."""
    root = Path(__file__).resolve().parents[1]
    if not (root / ".git").exists():
        return None

    def git(*args: str) -> str:
        run = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30, check=True
        )
        return run.stdout.strip()

    try:
        sha = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("+dirty" if dirty else "")


def check_config_dir() -> None:
    if not Path(CONFIG_DIR, "train.yaml").is_file():
        raise FileNotFoundError(
            f"tdsclip's Hydra configs were not found at {CONFIG_DIR}; install the repository "
            "in editable mode (`pip install -e .` from the checkout)."
        )


def register_resolvers() -> None:
    """``${run_stamp:}``: one timestamp for every rank of a run (rank 0 chooses it)."""
    stamp = distributed.shared_run_stamp()
    OmegaConf.register_new_resolver("run_stamp", lambda: stamp, replace=True)


def run_hydra(hydra_main: Callable[[], Any], *, join_process_group: bool = True) -> None:
    """Start a ``@hydra.main`` entry point: configs found, process group joined (under
    torchrun), one run stamp for every rank, Hydra's own files written by rank 0 only."""
    check_config_dir()
    rank = distributed.init_process_group().rank if join_process_group else 0
    register_resolvers()
    sys.argv += hydra_rank_overrides(rank)
    hydra_main()


def hydra_rank_overrides(rank: int) -> list[str]:
    """Command-line additions for ranks > 0: only rank 0 writes Hydra's files and log."""
    if rank == 0:
        return []
    return ["hydra.output_subdir=null", "hydra/job_logging=stdout"]


def resolve_device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("trainer.device=cuda but no CUDA device is visible")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    if name != "cpu":
        raise ValueError(f"trainer.device must be auto, cpu or cuda, got {name!r}")
    return torch.device("cpu")


PRECISIONS = ("auto", *AMP_DTYPES)


def amp_dtype(precision: str) -> torch.dtype | None:
    if precision not in AMP_DTYPES:
        raise ValueError(f"trainer.precision must be one of {list(AMP_DTYPES)}, got {precision!r}")
    return AMP_DTYPES[precision]


@dataclass(frozen=True)
class Precision:
    """The mixed precision a run uses (``name``) and why it was chosen (``reason``)."""

    name: str  # bf16 | fp16 | fp32
    reason: str

    @property
    def dtype(self) -> torch.dtype | None:
        return AMP_DTYPES[self.name]

    @property
    def needs_scaler(self) -> bool:
        """fp16 gradients underflow without a GradScaler; bf16 and fp32 need none."""
        return self.name == "fp16"

    def describe(self) -> str:
        return f"{self.name} ({self.reason})"


def _cpu_flag(name: str) -> bool:
    check = getattr(torch.cpu, name, None)  # private cpuinfo probes; absent on some builds
    try:
        return bool(check()) if callable(check) else False
    except RuntimeError:
        return False


def cpu_native_bf16() -> tuple[bool, str]:
    """Whether this CPU computes bf16 products natively (not emulated), and what was found.

    x86: AVX512-BF16 or AMX, and oneDNN allowed to use them (``ONEDNN_MAX_CPU_ISA`` can cap
    it). Elsewhere (Arm): oneDNN's own check for bf16 instructions.
    """
    mkldnn_bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686"):
        if mkldnn_bf16:
            return True, "this CPU has bf16 instructions"
        return False, "this CPU has no bf16 instructions: bf16 would be emulated, much slower"
    units = [
        name
        for name, probe in (
            ("AMX", "_is_amx_tile_supported"),
            ("AVX512-BF16", "_is_avx512_bf16_supported"),
        )
        if _cpu_flag(probe)
    ]
    if not units:
        return False, (
            "this CPU has neither AVX512-BF16 nor AMX: bf16 would be emulated, about 6x slower"
        )
    if not mkldnn_bf16:
        return False, f"oneDNN may not use this CPU's {' and '.join(units)} (ONEDNN_MAX_CPU_ISA)"
    return True, f"this CPU has {' and '.join(units)}"


def resolve_precision(requested: str, device: torch.device) -> Precision:
    """``trainer.precision`` for ``device``: an explicit value wins; ``auto`` gives bf16
    where the device computes it natively, fp16 with a GradScaler on older GPUs and fp32 on
    CPUs without bf16 units."""
    if requested not in PRECISIONS:
        raise ValueError(f"trainer.precision must be one of {list(PRECISIONS)}, got {requested!r}")
    if requested != "auto":
        if requested == "bf16" and device.type == "cpu" and not cpu_native_bf16()[0]:
            log.warning(
                "trainer.precision=bf16 on a CPU without native bf16 (%s); "
                "trainer.precision=auto would pick fp32",
                cpu_native_bf16()[1],
            )
        return Precision(requested, "set by trainer.precision")
    if device.type == "cuda":
        gpu = torch.cuda.get_device_name(device)
        if torch.cuda.is_bf16_supported(including_emulation=False):
            return Precision("bf16", f"auto: the {gpu} computes bf16 natively")
        return Precision("fp16", f"auto: the {gpu} has no native bf16, so fp16 with a GradScaler")
    if device.type != "cpu":
        return Precision("fp32", f"auto: no mixed precision chosen for {device.type} devices")
    native, why = cpu_native_bf16()
    return Precision("bf16" if native else "fp32", f"auto: {why}")


def available_cores() -> int:
    """CPU cores this process may use: its affinity mask, capped by a cgroup CPU quota
    (containers, Slurm), at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    if quota is not None:
        cores = min(cores, max(1, int(quota)))
    return max(1, cores)


def _cgroup_cpu_quota() -> float | None:
    """Cores granted by a cgroup v2 ``cpu.max`` (or v1 CFS) quota; None when unlimited."""
    try:
        text = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if text and text[0] != "max":
            return int(text[0]) / int(text[1])
        return None
    except (OSError, ValueError, IndexError):
        pass
    try:
        quota = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None


@dataclass(frozen=True)
class ThreadPlan:
    """Intra-op threads of the main process; each data worker runs one."""

    main: int
    workers: int
    cores: int
    reason: str

    def describe(self) -> str:
        return (
            f"{self.main} intra-op thread(s) in the main process, {self.workers} data "
            f"worker(s) x 1 thread, {self.cores} core(s) available ({self.reason})"
        )


def plan_threads(
    requested: int | None, *, num_workers: int, local_processes: int = 1
) -> ThreadPlan:
    """Threads for a training or evaluation process.

    The cores are shared by the ``local_processes`` ranks of this machine; each rank's data
    workers decode with one thread each (DataLoader sets it, the decoders are asked for one),
    and the main process gets the rest of its share, at least one. Threads beyond the free
    cores do not add speed: OpenMP's barriers then wait on descheduled threads and a step
    runs many times slower. ``requested`` (``trainer.threads``) overrides.
    """
    cores = available_cores()
    if requested is not None:
        if int(requested) < 1:
            raise ValueError(f"trainer.threads must be a positive integer or null, got {requested}")
        return ThreadPlan(int(requested), num_workers, cores, "set by trainer.threads")
    share = max(1, cores // max(1, local_processes))
    main = max(1, share - num_workers)
    return ThreadPlan(main, num_workers, cores, f"auto: {share} core(s) for this process")


def apply_threads(plan: ThreadPlan) -> None:
    torch.set_num_threads(plan.main)


def autocast(
    device: torch.device, dtype: torch.dtype | None, *, cache: bool = True
) -> contextlib.AbstractContextManager:
    """The one mixed-precision context of every forward pass (no-op for fp32).

    ``cache=False`` turns off autocast's cache of cast weights, which CUDA graphs need
    (``capture_cuda_graphs``): a graph replays the casts instead.
    """
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype, cache_enabled=cache)


def capture_cuda_graphs(
    model: torch.nn.Module, sample: torch.Tensor, dtype: torch.dtype | None
) -> torch.nn.Module:
    """Make ``model``'s training-mode forward and backward replays of two CUDA graphs.

    ``torch.cuda.make_graphed_callables`` captures one call on ``sample``'s shape: every
    later call in training mode copies its input into the captured buffer and launches the
    whole forward (backward) as one graph, instead of thousands of kernels one by one from
    Python, which leaves a GPU idle when the step is short. Gradients come out of the
    backward graph and accumulate into ``.grad`` as usual (accumulation, clipping, GradScaler
    and the optimizer run outside it). In eval mode the model runs as before. Every call must
    have the sample's shape and run under ``autocast(..., cache=False)``; the output is the
    graph's own buffer, overwritten by the next call. The warm-up iterations of the capture
    would update the BatchNorm running statistics; those are put back as they were.
    """
    from tdsclip.models.layers import batch_norm_stats_kept

    if sample.device.type != "cuda":
        raise ValueError(f"CUDA graphs need a CUDA device, the sample is on {sample.device}")
    if not model.training:
        raise ValueError("capture the training step with the model in training mode")
    # Restored in place: the graphs read and write these very tensors.
    with batch_norm_stats_kept(model), autocast(sample.device, dtype, cache=False):
        torch.cuda.make_graphed_callables(model, (sample,), allow_unused_input=True)
    return model


def setup_worker_logging(rank: int, log_file: Path | None) -> None:
    """Logging for processes Hydra did not configure (self-launched workers)."""
    root = logging.getLogger()
    root.handlers.clear()
    fmt = logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(fmt)
    root.addHandler(console)
    if rank == 0 and log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(log_file)
        file_handler.setFormatter(fmt)
        root.addHandler(file_handler)
    root.setLevel(logging.INFO if rank == 0 else logging.WARNING)


def quiet_non_main(rank: int) -> None:
    if rank != 0:
        logging.getLogger().setLevel(logging.WARNING)


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


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_deterministic(enabled: bool) -> None:
    if not enabled:
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False


class PreemptionSignal:
    """Records SIGTERM / SIGUSR1 / SIGUSR2 (cluster preemption, time limits) so that the loop
    can save a checkpoint at the next step boundary and exit cleanly.

    A handler that was installed before (submitit's requeue handler, say) is called by
    :meth:`forward` once the checkpoint is safe, so requeueing still happens.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.received is None:
            name = signal.Signals(signum).name
            log.warning("received %s: saving a checkpoint at the next step, then exiting", name)
        self.received = signum

    def forward(self) -> None:
        """Call the previously installed Python handler of the received signal, if any."""
        previous = self._previous.get(self.received) if self.received is not None else None
        if callable(previous):
            previous(self.received, None)

    @contextlib.contextmanager
    def installed(self) -> Iterator[PreemptionSignal]:
        import threading

        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        try:
            yield self
        finally:
            for sig, handler in self._previous.items():
                signal.signal(sig, handler)
