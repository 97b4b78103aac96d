"""What NVML says about the pod's GPU, and which number the memory guard may trust.

Inside a container NVML lists compute processes by *host* PID, so looking ours up by
`os.getpid()` never matches (NVIDIA/nvidia-docker#1483, gpu-monitoring-tools#63). The
choice of memory source is therefore a pure function of one NVML snapshot
(`choose_memory`), unit-tested with recorded answers; `read_snapshot` and `read_stats`
are the only code that talks to the library.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

MemorySource = Literal["process", "device", "torch_reserved"]
MEMORY_SOURCES: tuple[MemorySource, ...] = ("process", "device", "torch_reserved")


@dataclass(frozen=True, slots=True)
class NvmlProcess:
    """One entry of nvmlDeviceGetComputeRunningProcesses (pid in NVML's namespace)."""

    pid: int
    used_bytes: int | None


@dataclass(frozen=True, slots=True)
class NvmlSnapshot:
    """The NVML answers the memory choice depends on, for the device this process uses.

    `visible_devices` counts what the container can see: physical GPUs, or MIG instances
    when the GPU runs in MIG mode (then `device_*` and `processes` are the instance's).
    `processes` is None when NVML refused the process query (some MIG setups do).
    """

    visible_devices: int
    mig: bool
    device_used_bytes: int | None
    device_total_bytes: int | None
    processes: tuple[NvmlProcess, ...] | None


@dataclass(frozen=True, slots=True)
class MemoryReading:
    used_bytes: int
    source: MemorySource
    reason: str


def choose_memory(
    snapshot: NvmlSnapshot | None, own_pid: int, has_cuda_context: bool, torch_reserved: int
) -> MemoryReading:
    """The GPU memory this server holds, from the most faithful source available.

    1. `process`: NVML lists our own PID (no PID namespace: bare metal, `hostPID`) - exact,
       CUDA context included.
    2. `device`: the container sees exactly one device (GPU or MIG instance), we hold a
       CUDA context on it and NVML lists exactly one compute process there - then that
       process is us, whatever its host PID, and the device's used memory is ours
       (context, allocator pool and non-PyTorch allocations alike).
    3. `torch_reserved`: anything else (time-sliced GPU shared with other pods, several
       visible devices, NVML missing or refusing): the bytes PyTorch's caching allocator
       reserves. That misses the CUDA context (a few hundred MB) - an underestimate,
       said so by the source label and in docs/observability.md.
    """
    if snapshot is None:
        return MemoryReading(torch_reserved, "torch_reserved", "NVML unavailable")
    processes = snapshot.processes
    if processes is not None:
        for proc in processes:
            if proc.pid == own_pid and proc.used_bytes is not None:
                return MemoryReading(proc.used_bytes, "process", "NVML lists this PID")
    kind = "MIG instance" if snapshot.mig else "device"
    if snapshot.visible_devices != 1:
        reason = f"the container sees {snapshot.visible_devices} {kind}s"
    elif not has_cuda_context:
        reason = "no CUDA context yet"
    elif processes is None:
        reason = f"NVML refused the {kind}'s process list"
    elif len(processes) != 1:
        reason = f"{len(processes)} compute processes on the {kind} (shared GPU)"
    elif snapshot.device_used_bytes is None:
        reason = f"NVML gave no used memory for the {kind}"
    else:
        return MemoryReading(
            snapshot.device_used_bytes, "device", f"the only compute process on the one {kind}"
        )
    return MemoryReading(torch_reserved, "torch_reserved", reason)


@dataclass(frozen=True, slots=True)
class GpuStats:
    """Board readings for /metrics; None where NVML does not report it (MIG instances
    have no utilization counter)."""

    utilization_ratio: float | None
    temperature_celsius: float | None
    power_watts: float | None
    memory_total_bytes: int | None


# ---- the library calls -----------------------------------------------------------------


def _normalized_uuid(value: str) -> str:
    return value.lower().removeprefix("gpu-").removeprefix("mig-")


def _mig_handles(nvml: Any, parent: Any) -> list[Any]:
    try:
        current, _pending = nvml.nvmlDeviceGetMigMode(parent)
    except nvml.NVMLError:  # not a MIG-capable GPU
        return []
    if current != nvml.NVML_DEVICE_MIG_ENABLE:
        return []
    handles = []
    for index in range(nvml.nvmlDeviceGetMaxMigDeviceCount(parent)):
        try:
            handles.append(nvml.nvmlDeviceGetMigDeviceHandleByIndex(parent, index))
        except nvml.NVMLError:  # slot empty, or not visible to this container
            continue
    return handles


@dataclass(frozen=True, slots=True)
class NvmlDevice:
    """The NVML handles of this process's device: the board, and the MIG instance on it
    when the GPU runs in MIG mode (None otherwise)."""

    board: Any
    instance: Any | None
    visible_devices: int

    @property
    def memory_handle(self) -> Any:
        return self.board if self.instance is None else self.instance


def open_device(nvml: Any, index: int, uuid: str | None) -> NvmlDevice:
    """Find this process's device: by UUID when torch knows it (robust to
    CUDA_VISIBLE_DEVICES reordering), else by CUDA index."""
    count = nvml.nvmlDeviceGetCount()
    boards = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
    migs = {i: _mig_handles(nvml, board) for i, board in enumerate(boards)}
    visible = sum(len(m) or 1 for m in migs.values())
    if uuid:
        wanted = _normalized_uuid(uuid)
        for i, board in enumerate(boards):
            for mig in migs[i]:
                if _normalized_uuid(str(nvml.nvmlDeviceGetUUID(mig))) == wanted:
                    return NvmlDevice(board, mig, visible)
            if _normalized_uuid(str(nvml.nvmlDeviceGetUUID(board))) == wanted:
                return NvmlDevice(board, migs[i][0] if len(migs[i]) == 1 else None, visible)
    board = boards[min(index, count - 1)]
    instances = migs[min(index, count - 1)]
    return NvmlDevice(board, instances[0] if len(instances) == 1 else None, visible)


def _memory_info(nvml: Any, handle: Any) -> Any:
    # v2 reports driver-reserved memory apart from `used`; v1's `used` includes it.
    try:
        return nvml.nvmlDeviceGetMemoryInfo(handle, version=nvml.nvmlMemory_v2)
    except (nvml.NVMLError, AttributeError, TypeError):
        return nvml.nvmlDeviceGetMemoryInfo(handle)


def read_snapshot(nvml: Any, device: NvmlDevice) -> NvmlSnapshot:
    handle = device.memory_handle
    used: int | None
    total: int | None
    try:
        info = _memory_info(nvml, handle)
        used, total = int(info.used), int(info.total)
    except nvml.NVMLError:
        used = total = None
    processes: tuple[NvmlProcess, ...] | None
    try:
        processes = tuple(
            NvmlProcess(int(p.pid), None if p.usedGpuMemory is None else int(p.usedGpuMemory))
            for p in nvml.nvmlDeviceGetComputeRunningProcesses(handle)
        )
    except nvml.NVMLError:
        processes = None
    return NvmlSnapshot(
        visible_devices=device.visible_devices,
        mig=device.instance is not None,
        device_used_bytes=used,
        device_total_bytes=total,
        processes=processes,
    )


def read_stats(nvml: Any, device: NvmlDevice) -> GpuStats:
    """Utilization of the device (None on a MIG instance: NVML has no per-instance
    counter), temperature and power of the board it sits on, memory of the device."""

    def ask(call: Any, *args: Any) -> Any:
        try:
            return call(*args)
        except nvml.NVMLError:
            return None

    rates = (
        None
        if device.instance is not None
        else ask(nvml.nvmlDeviceGetUtilizationRates, device.board)
    )
    temperature = ask(nvml.nvmlDeviceGetTemperature, device.board, nvml.NVML_TEMPERATURE_GPU)
    milliwatts = ask(nvml.nvmlDeviceGetPowerUsage, device.board)
    memory = ask(_memory_info, nvml, device.memory_handle)
    return GpuStats(
        utilization_ratio=None if rates is None else float(rates.gpu) / 100.0,
        temperature_celsius=None if temperature is None else float(temperature),
        power_watts=None if milliwatts is None else float(milliwatts) / 1000.0,
        memory_total_bytes=None if memory is None else int(memory.total),
    )
