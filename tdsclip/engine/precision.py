"""Mixed precision: which one a run uses (``trainer.precision``, ``auto`` by the hardware)
and the one autocast context every forward pass runs under."""

from __future__ import annotations

import contextlib
import logging
import platform
from dataclasses import dataclass

import torch

from tdsclip.errors import ConfigError

log = logging.getLogger(__name__)

AMP_DTYPES: dict[str, torch.dtype | None] = {
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
    "fp32": None,
}

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
        raise ConfigError(
            "trainer.precision", f"must be one of {list(PRECISIONS)}, got {requested!r}"
        )
    if requested != "auto":
        if requested == "bf16" and device.type == "cpu":
            native, why = cpu_native_bf16()
            if not native:
                log.warning(
                    "trainer.precision=bf16 on a CPU without native bf16 (%s); "
                    "trainer.precision=auto would pick fp32",
                    why,
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
