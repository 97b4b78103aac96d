"""A pod's CPU quota decides torch's intra-op threads and the model workers on CPU."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from pathlib import Path

import pytest
import torch
from polling import wait_for
from voicefleet_server.engine import cpu


@pytest.mark.parametrize(
    ("cpu_max", "cores"),
    [("200000 100000\n", 2.0), ("150000 100000", 1.5), ("max 100000\n", None), ("", None)],
)
def test_cgroup_v2_cpu_max(cpu_max: str, cores: float | None) -> None:
    assert cpu.quota_cores(cpu_max=cpu_max) == cores


@pytest.mark.parametrize(
    ("quota", "period", "cores"),
    [("400000\n", "100000\n", 4.0), ("-1\n", "100000\n", None), ("junk", "100000", None)],
)
def test_cgroup_v1_cfs_quota(quota: str, period: str, cores: float | None) -> None:
    assert cpu.quota_cores(cfs_quota_us=quota, cfs_period_us=period) == cores


def test_the_quota_is_read_from_the_cgroup_files(tmp_path: Path) -> None:
    assert cpu.read_quota_cores(tmp_path) is None  # no cgroup files: no limit known
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("300000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cpu.read_quota_cores(tmp_path) == 3.0
    (tmp_path / "cpu.max").write_text("100000 100000\n")  # v2 wins where both exist
    assert cpu.read_quota_cores(tmp_path) == 1.0


@pytest.mark.parametrize(
    ("visible", "quota", "threads"),
    [(64, 2.0, 2), (64, 1.5, 1), (64, 0.25, 1), (2, 8.0, 2), (16, None, 16)],
)
def test_threads_fit_the_quota_in_whole_cores(
    visible: int, quota: float | None, threads: int
) -> None:
    assert cpu.threads_for(visible, quota) == threads


def test_fitting_sets_torch_threads_unless_omp_num_threads_is_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    before = torch.get_num_threads()
    monkeypatch.setattr(cpu, "read_quota_cores", lambda: 1.0)
    try:
        torch.set_num_threads(4)
        monkeypatch.setenv("OMP_NUM_THREADS", "4")
        assert cpu.fit_threads_to_quota() == 4
        monkeypatch.delenv("OMP_NUM_THREADS")
        assert cpu.fit_threads_to_quota() == 1
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_model_workers_zero_means_one_per_core() -> None:
    assert cpu.model_workers(0, 2) == 2
    assert cpu.model_workers(0, 1) == 1
    assert cpu.model_workers(3, 16) == 3


def os_threads() -> int:
    return len(os.listdir("/proc/self/task"))


def parallel_work() -> threading.Thread:
    """A two-thread parallel region on the calling thread (OpenMP gives it a team)."""
    torch.set_num_threads(2)
    torch.ones(1 << 22).cumsum(0).sum()
    torch.nn.functional.conv1d(torch.ones(1, 8, 1 << 16), torch.ones(8, 8, 3))
    return threading.current_thread()


async def test_a_loader_on_a_passing_thread_leaves_no_openmp_team_behind() -> None:
    before = os_threads()
    loader = await cpu.on_passing_thread(parallel_work)
    loader.join(5)
    assert not loader.is_alive()
    await wait_for(lambda: os_threads() <= before, "the loader's team ends with it")
    # The control: on a pooled thread the team outlives the work (the measurement can fail).
    with concurrent.futures.ThreadPoolExecutor(1) as pooled:
        await asyncio.get_running_loop().run_in_executor(pooled, parallel_work)
        assert os_threads() >= before + 2  # the pooled thread and its team's other thread


def thread_niceness() -> dict[int, int]:
    """Niceness of each of this process's OS threads, by thread id."""
    niceness = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        niceness[int(task.name)] = int(fields[16])  # field 19 of stat: nice
    return niceness


def test_a_thread_that_lowers_its_priority_passes_it_to_its_openmp_team() -> None:
    base = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    before = set(thread_niceness())
    seen: dict[str, object] = {}

    def model_worker() -> None:
        seen["now"] = cpu.lower_priority(3)
        parallel_work()  # starts this thread's OpenMP team
        seen["team"] = {n for tid, n in thread_niceness().items() if tid not in before}

    worker = threading.Thread(target=model_worker)
    worker.start()
    worker.join(30)
    assert seen["now"] == min(19, base + 3)
    assert seen["team"] == {min(19, base + 3)}  # the worker and its team's other thread
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == base  # per thread
    assert cpu.lower_priority(0) == base
