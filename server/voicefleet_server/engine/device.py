"""Device and dtype resolution, and GPU memory readings (NVML).

Kept apart from the model so the choice is testable on any machine and the same
readings feed both /metrics and the VRAM budget.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import torch

from voicefleet_server.engine.nvml import (
    GpuStats,
    MemoryReading,
    NvmlDevice,
    choose_memory,
    open_device,
    read_snapshot,
    read_stats,
)
from voicefleet_server.metrics import GpuReport

log = logging.getLogger(__name__)


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
    """The precision a model loads with. `auto`: float16 on CUDA; float32 on CPU, where
    start-up tuning (engine/tuning.py) switches to bf16 autocast only if it measures it
    clearly faster with the same output (it was slower on fresh shapes: bench finding F1)."""
    if dtype not in {"auto", "float32", "float16", "bfloat16"}:
        raise ValueError(f"unknown dtype {dtype!r} (auto, float32, float16, bfloat16)")
    if dtype == "float32":
        return Precision(device, None)
    if device.startswith("cuda"):
        return Precision(device, torch.bfloat16 if dtype == "bfloat16" else torch.float16)
    if dtype == "float16":
        # Measured: float16 on CPU is unusably slow; refuse rather than crawl.
        raise ValueError("float16 is not supported on CPU; use auto, bfloat16 or float32")
    if dtype == "auto":
        return Precision(device, None)
    return Precision(device, torch.bfloat16)


class GpuMemoryReader:
    """GPU memory this server holds, and board readings for /metrics (NVML).

    Which number `used_bytes` is depends on what NVML can see from inside the pod (see
    `nvml.choose_memory`): this PID's own entry, the whole device when the container is
    alone on the one device it sees, else PyTorch's reserved bytes. `reading().source`
    says which, exported as `voicefleet_gpu_memory_source{source}`. 0 on CPU.
    """

    def __init__(self, device: str) -> None:
        self._device = device
        self._nvml: Any = None
        self._handles: NvmlDevice | None = None
        self._last_source: str | None = None
        if not device.startswith("cuda"):
            return
        try:
            import pynvml

            pynvml.nvmlInit()
            index = torch.device(device).index or 0
            uuid = getattr(torch.cuda.get_device_properties(index), "uuid", None)
            self._handles = open_device(pynvml, index, None if uuid is None else str(uuid))
            self._nvml = pynvml
        except Exception as exc:  # NVML missing in the container is not fatal
            log.warning("NVML unavailable (%s); reporting torch reserved memory", exc)

    @property
    def on_gpu(self) -> bool:
        return self._device.startswith("cuda")

    def reading(self) -> MemoryReading:
        if not self.on_gpu:
            return MemoryReading(0, "torch_reserved", "CPU")
        snapshot = None
        if self._handles is not None:
            try:
                snapshot = read_snapshot(self._nvml, self._handles)
            except Exception as exc:  # a flaky driver must not break /metrics or /readyz
                log.debug("NVML snapshot failed: %s", exc)
        reading = choose_memory(
            snapshot,
            os.getpid(),
            torch.cuda.is_initialized(),
            int(torch.cuda.memory_reserved(self._device)),
        )
        if reading.source != self._last_source:
            # Once per change: which number the memory guard compares, and why.
            log.info("GPU memory source: %s (%s)", reading.source, reading.reason)
            self._last_source = reading.source
        return reading

    def used_bytes(self) -> int:
        return self.reading().used_bytes

    def total_bytes(self) -> int:
        if not self.on_gpu:
            return 0
        if self._handles is not None:
            try:
                total = read_snapshot(self._nvml, self._handles).device_total_bytes
                if total:  # a MIG instance's own size, not the whole board's
                    return total
            except Exception as exc:
                log.debug("NVML memory query failed: %s", exc)
        return int(torch.cuda.get_device_properties(self._device).total_memory)

    def report(self) -> GpuReport | None:
        """What /metrics exports about the GPU; None on CPU (the series are absent)."""
        if not self.on_gpu:
            return None
        stats = GpuStats(None, None, None, None)
        if self._handles is not None:
            try:
                stats = read_stats(self._nvml, self._handles)
            except Exception as exc:
                log.debug("NVML stats failed: %s", exc)
        return GpuReport(
            utilization_ratio=stats.utilization_ratio,
            temperature_celsius=stats.temperature_celsius,
            power_watts=stats.power_watts,
            memory_total_bytes=stats.memory_total_bytes or self.total_bytes(),
            memory_source=self.reading().source,
        )
