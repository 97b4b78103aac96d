"""Which GPU memory number the server reports, from recorded NVML answers.

No GPU runs here, so NVML's answers are replayed: the cases a pod meets (host PIDs in a
container, a GPU time-sliced between pods, MIG instances, NVML refusing the process
list) go through the pure choice, and through `open_device`/`read_snapshot` with a
replaying stand-in that raises pynvml's own error classes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pynvml
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from voicefleet_server.engine.device import GpuMemoryReader
from voicefleet_server.engine.nvml import (
    NvmlProcess,
    NvmlSnapshot,
    choose_memory,
    open_device,
    read_snapshot,
    read_stats,
)
from voicefleet_server.metrics import GpuReport, Metrics

GIB = 1 << 30
CONTAINER_PID = 7  # what os.getpid() says inside a pod: small, in the pod's PID namespace
TORCH_RESERVED = 1_612_709_888  # allocator pool only: no CUDA context


def snap(
    processes: tuple[NvmlProcess, ...] | None,
    visible: int = 1,
    mig: bool = False,
    used: int | None = 2_214_592_512,
) -> NvmlSnapshot:
    return NvmlSnapshot(visible, mig, used, 80 * GIB, processes)


def test_own_pid_listed_uses_the_process_entry() -> None:
    # Bare metal or hostPID: NVML's PIDs are ours.
    answers = snap((NvmlProcess(4242, 2_080_374_784), NvmlProcess(5151, 9 * GIB)))
    reading = choose_memory(answers, 4242, True, TORCH_RESERVED)
    assert (reading.used_bytes, reading.source) == (2_080_374_784, "process")


def test_container_alone_on_its_gpu_uses_device_memory() -> None:
    # The pod's only compute process shows up under its host PID (381245), never 7.
    answers = snap((NvmlProcess(381245, 2_080_374_784),))
    reading = choose_memory(answers, CONTAINER_PID, True, TORCH_RESERVED)
    assert (reading.used_bytes, reading.source) == (2_214_592_512, "device")


def test_time_sliced_gpu_with_other_pods_falls_back() -> None:
    answers = snap(
        (NvmlProcess(381245, 2 * GIB), NvmlProcess(381999, 3 * GIB), NvmlProcess(402, GIB)),
        used=6 * GIB,
    )
    reading = choose_memory(answers, CONTAINER_PID, True, TORCH_RESERVED)
    assert (reading.used_bytes, reading.source) == (TORCH_RESERVED, "torch_reserved")
    assert "3 compute processes" in reading.reason


def test_two_visible_gpus_fall_back() -> None:
    answers = snap((NvmlProcess(381245, 2 * GIB),), visible=2)
    assert choose_memory(answers, CONTAINER_PID, True, TORCH_RESERVED).source == "torch_reserved"


def test_mig_instance_alone_uses_the_instance_memory() -> None:
    answers = snap((NvmlProcess(381245, None),), mig=True, used=1_950_000_000)
    reading = choose_memory(answers, CONTAINER_PID, True, TORCH_RESERVED)
    assert (reading.used_bytes, reading.source) == (1_950_000_000, "device")
    assert "MIG instance" in reading.reason


def test_mig_refusing_the_process_list_falls_back() -> None:
    answers = snap(None, mig=True)
    reading = choose_memory(answers, CONTAINER_PID, True, TORCH_RESERVED)
    assert reading.source == "torch_reserved"
    assert "refused" in reading.reason


def test_single_process_that_is_not_us_yet() -> None:
    # Before this process created its CUDA context, the one listed process is someone else.
    answers = snap((NvmlProcess(381245, 2 * GIB),))
    assert choose_memory(answers, CONTAINER_PID, False, 0).source == "torch_reserved"


def test_no_nvml_falls_back() -> None:
    reading = choose_memory(None, CONTAINER_PID, True, TORCH_RESERVED)
    assert (reading.used_bytes, reading.source) == (TORCH_RESERVED, "torch_reserved")


def test_own_pid_without_a_usage_figure_still_counts_the_device() -> None:
    answers = snap((NvmlProcess(4242, None),))
    assert choose_memory(answers, 4242, True, TORCH_RESERVED).source == "device"


# ---- the library calls, replayed -----------------------------------------------------


@dataclass
class RecordedGpu:
    uuid: str
    used: int
    total: int
    processes: list[tuple[int, int | None]] | None
    mig_instances: list[RecordedGpu] = field(default_factory=list)
    utilization: int | None = 37
    temperature: int = 61
    milliwatts: int = 212_345


def replay(gpus: list[RecordedGpu], memory_v2: bool = True) -> Any:
    """A stand-in for the pynvml module answering what `gpus` recorded."""

    def not_supported() -> Exception:
        return pynvml.NVMLError_NotSupported(pynvml.NVML_ERROR_NOT_SUPPORTED)

    def get_mig_mode(gpu: RecordedGpu) -> tuple[int, int]:
        if not gpu.mig_instances:
            raise not_supported()
        return (pynvml.NVML_DEVICE_MIG_ENABLE, pynvml.NVML_DEVICE_MIG_ENABLE)

    def mig_handle(gpu: RecordedGpu, index: int) -> RecordedGpu:
        if index >= len(gpu.mig_instances):
            raise pynvml.NVMLError_NotFound(pynvml.NVML_ERROR_NOT_FOUND)
        return gpu.mig_instances[index]

    def memory(gpu: RecordedGpu, version: int | None = None) -> Any:
        if version is not None and not memory_v2:
            raise pynvml.NVMLError_FunctionNotFound(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)
        return SimpleNamespace(used=gpu.used, total=gpu.total, free=gpu.total - gpu.used)

    def processes(gpu: RecordedGpu) -> list[Any]:
        if gpu.processes is None:
            raise pynvml.NVMLError_NoPermission(pynvml.NVML_ERROR_NO_PERMISSION)
        return [SimpleNamespace(pid=p, usedGpuMemory=m) for p, m in gpu.processes]

    def utilization(gpu: RecordedGpu) -> Any:
        if gpu.utilization is None:
            raise not_supported()
        return SimpleNamespace(gpu=gpu.utilization, memory=3)

    return SimpleNamespace(
        NVMLError=pynvml.NVMLError,
        NVML_DEVICE_MIG_ENABLE=pynvml.NVML_DEVICE_MIG_ENABLE,
        NVML_TEMPERATURE_GPU=pynvml.NVML_TEMPERATURE_GPU,
        nvmlMemory_v2=pynvml.nvmlMemory_v2,
        nvmlDeviceGetCount=lambda: len(gpus),
        nvmlDeviceGetHandleByIndex=lambda i: gpus[i],
        nvmlDeviceGetMigMode=get_mig_mode,
        nvmlDeviceGetMaxMigDeviceCount=lambda gpu: 7,
        nvmlDeviceGetMigDeviceHandleByIndex=mig_handle,
        nvmlDeviceGetUUID=lambda gpu: gpu.uuid,
        nvmlDeviceGetMemoryInfo=memory,
        nvmlDeviceGetComputeRunningProcesses=processes,
        nvmlDeviceGetUtilizationRates=utilization,
        nvmlDeviceGetTemperature=lambda gpu, sensor: gpu.temperature,
        nvmlDeviceGetPowerUsage=lambda gpu: gpu.milliwatts,
    )


H200 = RecordedGpu(
    "GPU-5d2a8c1e-0f4b-7c3d-9e2a-1b4c6d8e0f12", 2_214_592_512, 150_754_820_096, [(381245, None)]
)


def test_replayed_container_gpu() -> None:
    nvml = replay([H200])
    device = open_device(nvml, 0, "5d2a8c1e-0f4b-7c3d-9e2a-1b4c6d8e0f12")
    answers = read_snapshot(nvml, device)
    assert answers == NvmlSnapshot(
        1, False, 2_214_592_512, 150_754_820_096, (NvmlProcess(381245, None),)
    )
    assert choose_memory(answers, CONTAINER_PID, True, TORCH_RESERVED).source == "device"
    stats = read_stats(nvml, device)
    assert stats.utilization_ratio == pytest.approx(0.37)
    assert (stats.temperature_celsius, stats.power_watts) == (61.0, pytest.approx(212.345))
    assert stats.memory_total_bytes == 150_754_820_096


def test_replayed_mig_instance_is_found_by_uuid() -> None:
    mine = RecordedGpu("MIG-aaaa", 1_950_000_000, 10 * GIB, [(381245, None)], utilization=None)
    other = RecordedGpu("MIG-bbbb", 9 * GIB, 10 * GIB, [(1, None), (2, None)], utilization=None)
    board = RecordedGpu("GPU-board", 0, 80 * GIB, None, mig_instances=[other, mine])
    nvml = replay([board], memory_v2=False)
    device = open_device(nvml, 0, "MIG-aaaa")
    assert device.instance is mine
    answers = read_snapshot(nvml, device)
    assert (answers.mig, answers.visible_devices, answers.device_total_bytes) == (
        True,
        2,
        10 * GIB,
    )
    # Two instances visible to this container: the instance's memory is not provably ours.
    assert choose_memory(answers, CONTAINER_PID, True, TORCH_RESERVED).source == "torch_reserved"
    stats = read_stats(nvml, device)
    assert stats.utilization_ratio is None  # NVML has no per-instance utilization
    assert stats.temperature_celsius == 61.0


def test_replayed_single_mig_instance_without_process_permission() -> None:
    mine = RecordedGpu("MIG-aaaa", 1_950_000_000, 10 * GIB, None, utilization=None)
    board = RecordedGpu("GPU-board", 0, 80 * GIB, None, mig_instances=[mine])
    nvml = replay([board])
    answers = read_snapshot(nvml, open_device(nvml, 0, None))
    assert (answers.mig, answers.visible_devices, answers.processes) == (True, 1, None)
    assert choose_memory(answers, CONTAINER_PID, True, TORCH_RESERVED).source == "torch_reserved"


# ---- what /metrics shows -------------------------------------------------------------


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(metrics.registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


GPU_SERIES = (
    "voicefleet_gpu_utilization_ratio",
    "voicefleet_gpu_temperature_celsius",
    "voicefleet_gpu_power_watts",
    "voicefleet_gpu_memory_total_bytes",
    "voicefleet_gpu_memory_source",
)


def test_gpu_series_absent_on_cpu() -> None:
    metrics = Metrics()
    reader = GpuMemoryReader("cpu")
    metrics.gpu.read = reader.report
    names = {name for name, _ in samples(metrics)}
    assert not names & set(GPU_SERIES)
    assert "voicefleet_gpu_memory_used_bytes" in names  # the guard's series stays
    assert reader.used_bytes() == 0


def test_gpu_series_present_with_a_report() -> None:
    metrics = Metrics()
    metrics.gpu.read = lambda: GpuReport(0.5, 70.0, 300.5, 80 * GIB, "device")
    found = samples(metrics)
    assert found[("voicefleet_gpu_utilization_ratio", ())] == 0.5
    assert found[("voicefleet_gpu_temperature_celsius", ())] == 70.0
    assert found[("voicefleet_gpu_power_watts", ())] == 300.5
    assert found[("voicefleet_gpu_memory_total_bytes", ())] == 80 * GIB
    source = {k[1][0][1]: v for k, v in found.items() if k[0] == "voicefleet_gpu_memory_source"}
    assert source == {"process": 0.0, "device": 1.0, "torch_reserved": 0.0}


def test_mig_report_leaves_utilization_out() -> None:
    metrics = Metrics()
    metrics.gpu.read = lambda: GpuReport(None, 70.0, 300.5, 10 * GIB, "torch_reserved")
    names = {name for name, _ in samples(metrics)}
    assert "voicefleet_gpu_utilization_ratio" not in names
    assert "voicefleet_gpu_temperature_celsius" in names
