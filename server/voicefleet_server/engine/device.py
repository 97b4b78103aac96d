"""Device and dtype resolution, and GPU memory readings (NVML, per process).

Kept apart from the model so the choice is testable on any machine and the same
readings feed both /metrics and the VRAM budget.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)

_QUANTITY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGTPE]i?|[kmgtpe]|)\s*$")
_FACTORS = {
    "": 1,
    "k": 10**3,
    "K": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}


def parse_quantity(value: str | int) -> int:
    """Bytes in a Kubernetes-style quantity ('8Gi', '500M', '1073741824')."""
    if isinstance(value, int):
        return value
    match = _QUANTITY.match(value)
    if not match:
        raise ValueError(f"not a memory quantity: {value!r} (expected e.g. 8Gi, 512Mi, 2G)")
    number, unit = match.groups()
    return int(float(number) * _FACTORS[unit])


@dataclass(frozen=True, slots=True)
class Precision:
    """How a model runs: weights stay float32; `autocast` names the reduced-precision
    dtype used around the heavy, numerically tolerant modules (None: pure float32)."""

    device: str
    autocast: torch.dtype | None

    @property
    def label(self) -> str:
        return "float32" if self.autocast is None else str(self.autocast).removeprefix("torch.")


def resolve_device(requested: str) -> str:
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda requested but no CUDA device is available")
    return requested


def cpu_supports_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(device: str, dtype: str) -> Precision:
    """`auto`: float16 on CUDA, bfloat16 autocast on CPUs with native bf16, else float32."""
    if dtype not in {"auto", "float32", "float16", "bfloat16"}:
        raise ValueError(f"unknown dtype {dtype!r} (auto, float32, float16, bfloat16)")
    if dtype == "float32":
        return Precision(device, None)
    if device.startswith("cuda"):
        return Precision(device, torch.bfloat16 if dtype == "bfloat16" else torch.float16)
    if dtype == "float16":
        # Measured: float16 on CPU is unusably slow; refuse rather than crawl.
        raise ValueError("float16 is not supported on CPU; use auto, bfloat16 or float32")
    if dtype == "auto" and not cpu_supports_bf16():
        return Precision(device, None)
    return Precision(device, torch.bfloat16)


class GpuMemoryReader:
    """This process's GPU memory in bytes: NVML per-process usage (what the operator's
    guard and `nvidia-smi` see, including the CUDA context), falling back to torch's
    reserved bytes where NVML is unavailable. 0 on CPU."""

    def __init__(self, device: str) -> None:
        self._device = device
        self._handle: object | None = None
        if not device.startswith("cuda"):
            return
        try:
            import pynvml

            pynvml.nvmlInit()
            index = torch.device(device).index or 0
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        except Exception as exc:  # NVML missing in the container is not fatal
            log.warning("NVML unavailable (%s); reporting torch reserved memory", exc)

    def used_bytes(self) -> int:
        if not self._device.startswith("cuda"):
            return 0
        if self._handle is not None:
            import pynvml

            try:
                pid = os.getpid()
                for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(self._handle):
                    if proc.pid == pid and proc.usedGpuMemory is not None:
                        return int(proc.usedGpuMemory)
            except pynvml.NVMLError as exc:
                log.debug("NVML process query failed: %s", exc)
        return int(torch.cuda.memory_reserved(self._device))

    def total_bytes(self) -> int:
        if not self._device.startswith("cuda"):
            return 0
        return int(torch.cuda.get_device_properties(self._device).total_memory)
