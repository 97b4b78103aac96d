"""The CPU a pod really has: its cgroup quota, torch's intra-op threads fitted to it, how
many model calls run side by side, which threads may run torch's parallel regions, and
at which priority the model threads run.

torch sizes its thread pool by the cores it can see, not by the pod's CPU limit: a pod
limited to 2 CPUs on a 64-core node would run 64 threads in 2 CPUs' worth of time slices,
and torch's threads collapse when they outnumber the cores they get (bench/RESULTS.md:
float32 real-time factor 1.39 with two threads on a shared 2-core VM vs 0.24 with one).
An explicit OMP_NUM_THREADS is the operator's choice and is left alone.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch

log = logging.getLogger(__name__)
_T = TypeVar("_T")

_CGROUP = Path("/sys/fs/cgroup")


def quota_cores(
    cpu_max: str | None = None, cfs_quota_us: str | None = None, cfs_period_us: str | None = None
) -> float | None:
    """Cores allowed by a cgroup v2 `cpu.max` ("200000 100000", or "max 100000" for none)
    or by cgroup v1's `cpu.cfs_quota_us` / `cpu.cfs_period_us` (-1: none)."""
    if cpu_max is not None:
        fields = cpu_max.split()
        if len(fields) == 2 and fields[0] != "max":
            return _ratio(fields[0], fields[1])
        return None
    if cfs_quota_us is not None and cfs_period_us is not None:
        return _ratio(cfs_quota_us.strip(), cfs_period_us.strip())
    return None


def _ratio(quota: str, period: str) -> float | None:
    try:
        q, p = int(quota), int(period)
    except ValueError:
        return None
    return q / p if q > 0 and p > 0 else None


def read_quota_cores(root: Path = _CGROUP) -> float | None:
    """This process's CPU quota in cores, from cgroup v2 or v1 (None: unlimited/unknown)."""

    def read(name: str) -> str | None:
        try:
            return (root / name).read_text()
        except OSError:
            return None

    v2 = read("cpu.max")
    if v2 is not None:
        return quota_cores(cpu_max=v2)
    return quota_cores(
        cfs_quota_us=read("cpu/cpu.cfs_quota_us") or read("cpu.cfs_quota_us"),
        cfs_period_us=read("cpu/cpu.cfs_period_us") or read("cpu.cfs_period_us"),
    )


def threads_for(visible: int, quota: float | None) -> int:
    """Intra-op threads for `visible` cores under `quota` cores (whole cores, at least 1)."""
    if quota is None:
        return visible
    return max(1, min(visible, int(quota)))


def fit_threads_to_quota() -> int:
    """Set torch's intra-op threads to the pod's CPU quota (unless OMP_NUM_THREADS says
    otherwise) and return the count now in effect."""
    visible = torch.get_num_threads()
    if os.environ.get("OMP_NUM_THREADS"):
        return visible
    quota = read_quota_cores()
    threads = threads_for(visible, quota)
    if threads != visible:
        torch.set_num_threads(threads)
        log.info(
            "CPU quota %.2f cores: %d intra-op threads (torch saw %d cores)",
            quota or 0.0,
            threads,
            visible,
        )
    return threads


def model_workers(requested: int, cores: int) -> int:
    """Model calls side by side on CPU: as asked, or (0) one per core. One (the default)
    keeps one OpenMP team in the process (see `on_passing_thread`): each worker that runs a
    multi-threaded call holds a team of its own, and with more team threads than cores
    they all sleep between parallel regions (bench/RESULTS.md, "One OpenMP team")."""
    return requested if requested > 0 else max(1, cores)


def call_thread_counts(cores: int, workers: int) -> list[int]:
    """The intra-op thread counts a CPU model call may run at, most first: every core alone,
    `cores // n` beside n - 1 other calls."""
    return sorted({max(1, cores // n) for n in range(1, max(1, workers) + 1)}, reverse=True)


async def on_passing_thread(fn: Callable[[], _T]) -> _T:
    """`fn()` on a thread of its own that ends when it returns (model loading and warm-up).

    OpenMP (libgomp, torch's CPU runtime) keeps a team of threads for every thread that ran
    a parallel region, for that thread's whole life; once the process holds more of them
    than it has cores, every team's threads sleep between parallel regions instead of
    spinning, and a multi-threaded model call pays a wake-up per region. A loader on a
    pooled thread (`asyncio.to_thread`) would leave its team behind beside the model
    worker's: two-thread calls on the worker then did 0.63-0.78x their work alone on a
    2-core VM, in two runs (bench/openmp_teams.py; bench/RESULTS.md, "One OpenMP team").
    """
    once = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="voicefleet-load")
    try:
        return await asyncio.get_running_loop().run_in_executor(once, fn)
    finally:
        once.shutdown(wait=False)  # its thread ends now, and its team with it


def lower_priority(nice: int) -> int:
    """Add `nice` to the calling thread's niceness (Linux keeps it per thread, and threads
    it starts, such as its OpenMP team, inherit it); returns the niceness now in force.

    The model worker calls this before its first model call: its threads then yield a
    core, when they compete for one, to the server's own request handling, text threads
    and espeak-ng processes, whose few milliseconds decide a newcomer's latency, while
    long-form rendering takes every cycle they leave. Within a pod's cgroup, niceness
    weighs only the pod's own threads against each other, not the pod against others.
    Raising niceness needs no privilege; lowering it back would, so it is never lowered.
    """
    thread = threading.get_native_id()
    current = os.getpriority(os.PRIO_PROCESS, thread)
    if nice > 0:
        os.setpriority(os.PRIO_PROCESS, thread, min(19, current + nice))
    return os.getpriority(os.PRIO_PROCESS, thread)
