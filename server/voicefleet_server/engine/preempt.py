"""Preemption points: where a long model call may pause so that urgent work runs first.

A model call cannot be interrupted from outside, so a one-liner arriving while a long
segment renders would wait for all of it (bench finding F5: what remained after the
deadline fixes). Model code calls `preemption_point()` between its stages (after the text
encoder, before the vocoder, after each vocoder block); the engine's worker thread
installs a hook there that runs newly arrived urgent work nested in the call, then
resumes it. Stages are pure functions of their inputs, so the paused call's result is
unchanged; only its wall time grows, and `paused_seconds` tells how much. Without a hook
(tests, tools, a GPU) a point costs one attribute lookup.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

_local = threading.local()


def preemption_point() -> None:
    """Let urgent work run here, if this thread's engine has any."""
    hook: Callable[[], None] | None = getattr(_local, "hook", None)
    if hook is not None:
        hook()


@contextmanager
def hook_installed(hook: Callable[[], None] | None) -> Iterator[None]:
    """Run `hook` at every preemption point reached on this thread inside the block
    (None: none; nested urgent work is itself not preempted)."""
    previous = getattr(_local, "hook", None)
    _local.hook = hook
    try:
        yield
    finally:
        _local.hook = previous


@contextmanager
def pausing() -> Iterator[None]:
    """Count the block's wall time as a pause of the calls it is nested in."""
    started = time.perf_counter()
    try:
        yield
    finally:
        _local.paused = paused_seconds() + time.perf_counter() - started


def paused_seconds() -> float:
    """Seconds this thread has spent in nested urgent work (a running total: subtract two
    readings to get a call's pauses)."""
    paused: float = getattr(_local, "paused", 0.0)
    return paused
