"""The engine: a queue of segments, a scheduler task, and model worker threads (one per
GPU; on CPU `workers` of them sharing the cores).

Each segment carries an `asyncio.Future`. The scheduler task asks `plan_batch` what to
run, hands the batch to a free worker thread (the event loop never blocks on the model),
and resolves every future it owns, with audio or with an exception, so no caller is
left hanging and none receives another's audio. A failing batch is split in halves
until the faulty item is isolated; an out-of-memory batch is split the same way.

A model call that runs past `batch_timeout_s` (each call of a split-and-retry has its own
deadline) fails its batch with `SynthesisTimeout` and the engine moves on with a fresh
worker thread (a Python thread cannot be killed).
The stuck thread is a daemon, so it never holds the process open; `stuck_for_s` tells
the health probe how long it has been stuck, so Kubernetes restarts a pod that hangs.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import functools
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np
import torch

from voicefleet_server.engine import preempt
from voicefleet_server.engine.cpu import call_thread_counts, lower_priority
from voicefleet_server.engine.model import (
    DeviceOutOfMemory,
    SpeechModel,
    SynthesisError,
    SynthesisItem,
    SynthesisTimeout,
)
from voicefleet_server.engine.scheduler import (
    BatchLimits,
    Waiting,
    padding_waste,
    plan_batch,
    segment_deadline,
    select_batch,
)
from voicefleet_server.metrics import Metrics

log = logging.getLogger(__name__)

# Audio seconds per token before any real output has been measured (MMS-like models).
_INITIAL_SECONDS_PER_TOKEN = 0.04


class QueueFull(Exception):
    """Admitting this request would exceed the queue limit."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__("the server is at capacity")
        self.retry_after_s = retry_after_s


class EngineStopped(Exception):
    """The engine is draining or stopped and takes no new work."""


_T = TypeVar("_T")
_R = TypeVar("_R")
_thread_state = threading.local()
# One model call queued for the worker thread, and the future its result goes to.
_ModelCall = tuple[Callable[[], _T], "concurrent.futures.Future[_T]"]


class _Wake:
    """Queued after an urgent call so that an idle worker runs it at once."""


_WAKE = _Wake()


def _settle(
    future: concurrent.futures.Future[Any], result: Any = None, exc: BaseException | None = None
) -> None:
    """Resolve `future` unless it was already failed (a timed-out urgent call that returns late)."""
    with contextlib.suppress(concurrent.futures.InvalidStateError):
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)


class _SharedCores:
    """The cores that several CPU workers share, and the right of way of a newcomer.

    While a lone newcomer's call runs (nested in long-form work as an urgent call, or on a
    worker that was free), long-form calls on the other workers wait at their next
    preemption point, and the newcomer runs with every core: a one-liner arriving during
    long-form work then takes about its idle time, not its time on one core beside a
    running call. Claims may overlap (one on each worker); the cores are clear when the
    last ends.
    """

    # A stuck claimant must not freeze the other workers for good.
    MAX_WAIT_S = 10.0

    def __init__(self, cores: int) -> None:
        self.cores = cores
        self._claims = 0
        self._lock = threading.Lock()
        self._clear = threading.Event()
        self._clear.set()

    @contextlib.contextmanager
    def claimed(self) -> Iterator[None]:
        """Hold every core for the block, at every core's thread count."""
        with self._lock:
            self._claims += 1
            self._clear.clear()
        threads = torch.get_num_threads()
        torch.set_num_threads(self.cores)
        try:
            yield
        finally:
            torch.set_num_threads(threads)
            with self._lock:
                self._claims -= 1
                if self._claims == 0:
                    self._clear.set()

    def wait_while_claimed(self) -> None:
        if not self._clear.is_set():
            with preempt.pausing():  # counted as a pause, like nested urgent work
                self._clear.wait(self.MAX_WAIT_S)


class _ModelWorker(Generic[_T]):
    """One daemon thread that runs model calls in order.

    A daemon rather than a ThreadPoolExecutor thread: the interpreter joins executor
    threads at exit, so one stuck model call would keep a draining pod alive forever.
    Urgent calls (`submit_urgent`) jump the queue: a preemptible worker runs them at the
    next preemption point of the call in progress (engine/preempt.py), an idle one at once.
    """

    def __init__(
        self,
        name: str,
        preemptible: bool = False,
        shared: _SharedCores | None = None,
        nice: int = 0,
    ) -> None:
        self.nice = nice
        self._jobs: queue.SimpleQueue[_ModelCall[_T] | _Wake | None] = queue.SimpleQueue()
        self._urgent: queue.SimpleQueue[_ModelCall[Any]] = queue.SimpleQueue()
        self._urgent_running: concurrent.futures.Future[Any] | None = None
        self.preemptible = preemptible
        # Intra-op threads this worker's call should use now (None: leave them). The engine
        # updates it as calls start and end; the call adopts it at its next preemption point.
        self.threads_wanted: int | None = None
        # Several workers: urgent work on any of them has the cores (see _SharedCores), and
        # whether the call now running here (long-form work) gives them up meanwhile.
        self.shared = shared
        self.yields_cores = False
        self.busy_since: float | None = None
        # When the model call now running on this thread started (None between calls).
        self.call_started: float | None = None
        self.abandoned_at: float | None = None
        # The worker that took over after this one was abandoned (urgent calls moved there).
        self.replaced_by: _ModelWorker[Any] | None = None
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[], _T]) -> concurrent.futures.Future[_T]:
        future: concurrent.futures.Future[_T] = concurrent.futures.Future()
        self._jobs.put((fn, future))
        return future

    def submit_urgent(self, fn: Callable[[], _R]) -> concurrent.futures.Future[_R]:
        future: concurrent.futures.Future[_R] = concurrent.futures.Future()
        self.put_urgent((fn, future))
        return future

    def put_urgent(self, job: _ModelCall[Any]) -> None:
        self._urgent.put(job)
        self._jobs.put(_WAKE)

    def take_urgent(self) -> list[_ModelCall[Any]]:
        """Urgent calls not started yet (handed to a fresh worker when this one is stuck)."""
        taken = []
        with contextlib.suppress(queue.Empty):
            while True:
                taken.append(self._urgent.get_nowait())
        return taken

    def fail_running_urgent(self, exc: BaseException) -> None:
        running = self._urgent_running
        if running is not None:
            _settle(running, exc=exc)

    def stop(self) -> None:
        """Exit after the current call (if it ever returns)."""
        self._jobs.put(None)

    def join(self, timeout: float | None) -> None:
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @staticmethod
    def current() -> _ModelWorker[object] | None:
        """The worker whose thread is calling, if any."""
        worker: _ModelWorker[object] | None = getattr(_thread_state, "worker", None)
        return worker

    def _loop(self) -> None:
        _thread_state.worker = self
        lower_priority(self.nice)  # before this thread starts its OpenMP team
        hook = self._at_preemption_point
        while (job := self._jobs.get()) is not None:
            if isinstance(job, _Wake):
                self._run_urgent()
                continue
            fn, future = job
            if not future.set_running_or_notify_cancel():
                continue
            self.busy_since = time.monotonic()
            try:
                with preempt.hook_installed(hook):
                    result = fn()
            except BaseException as exc:  # handed to the awaiting side, like an executor
                future.set_exception(exc)
            else:
                future.set_result(result)
            finally:
                self.busy_since = None

    def _at_preemption_point(self) -> None:
        # Cores freed or claimed by calls on other workers: a call running with every core
        # drops to its share when another starts (and back when it ends) instead of
        # oversubscribing them until it finishes.
        if self.shared is not None and self.yields_cores:
            self.shared.wait_while_claimed()
        wanted = self.threads_wanted
        if wanted is not None and wanted != torch.get_num_threads():
            torch.set_num_threads(wanted)  # OpenMP's count is this thread's own setting
        if self.preemptible:
            self._run_urgent()

    def _run_urgent(self) -> None:
        """Run the urgent calls queued so far, each unpreempted, counted as a pause of the
        call they are nested in (if any)."""
        while True:
            try:
                fn, future = self._urgent.get_nowait()
            except queue.Empty:
                return
            if not future.set_running_or_notify_cancel():
                continue
            self._urgent_running = future
            try:
                with preempt.hook_installed(None), preempt.pausing():
                    result = fn()
            except BaseException as exc:
                _settle(future, exc=exc)
            else:
                _settle(future, result=result)
            finally:
                self._urgent_running = None


@dataclass
class _Progress:
    """Shared by a request's segments: when the model last finished one of them, and
    whether any of them has gone to the model yet (a request that has not is a newcomer)."""

    last_finished: float | None = None
    dispatched: bool = False
    segments: int = 1

    @property
    def first_in_flight(self) -> bool:
        """A segment has gone to the model and none has come back: the request's first
        audio is rendering."""
        return self.dispatched and self.last_finished is None


@dataclass(eq=False)
class _Segment:
    key: int
    item: SynthesisItem
    future: asyncio.Future[np.ndarray]
    enqueued_at: float
    index: int  # position in its request: segment k is due (k + 1) slots after arrival
    request: int  # which request it belongs to (the scheduler shares batches among requests)
    slo_scale: float
    group: str
    estimated_audio_s: float
    progress: _Progress

    @property
    def newcomer(self) -> bool:
        """Interactive work (not a background job) of a request none of whose segments has
        gone to the model yet, still wanted by its caller: it may preempt long-form work."""
        interactive = self.slo_scale <= 1.0
        return interactive and not self.progress.dispatched and not self.future.cancelled()

    def view(self, slot_s: float) -> Waiting:
        slot = slot_s * self.slo_scale
        deadline = segment_deadline(self.enqueued_at, self.index, slot)
        if self.progress.last_finished is not None:
            # A request that fell behind its schedule is due one slot after its last
            # segment finished, not in the past: overdue segments cannot pile up ahead of
            # newcomers (who arrived before that finish), whatever the model-call time does.
            deadline = max(deadline, self.progress.last_finished + slot)
        return Waiting(
            self.key, len(self.item.token_ids), self.enqueued_at, deadline, self.group, self.request
        )


@dataclass(frozen=True, slots=True)
class _Call:
    """A batch handed to the model worker."""

    batch: list[_Segment]
    raw: concurrent.futures.Future[tuple[list[np.ndarray | BaseException], float]]
    worker: _ModelWorker[Any]
    started: float
    # Continuing work (every request in it has had a segment rendered): urgent newcomers
    # may run at its preemption points.
    preemptible: bool = False

    @property
    def moved(self) -> bool:
        """Not started, so not stuck: an urgent call handed to a fresh worker."""
        return not self.raw.running() and not self.raw.done()


@dataclass
class EngineStats:
    """Running estimates the engine learns from its own outputs."""

    seconds_per_token: float = _INITIAL_SECONDS_PER_TOKEN
    audio_per_wall_second: float = 0.0
    batch_seconds: float = 0.0
    batches: int = 0

    def observe(self, tokens: int, audio_s: float, wall_s: float) -> None:
        alpha = 0.2
        if tokens > 0:
            self.seconds_per_token += alpha * (audio_s / tokens - self.seconds_per_token)
        if wall_s > 0:
            self.batch_seconds = (
                wall_s
                if self.batches == 0
                else self.batch_seconds + alpha * (wall_s - self.batch_seconds)
            )
            rate = audio_s / wall_s
            self.audio_per_wall_second = (
                rate
                if self.batches == 0
                else self.audio_per_wall_second + alpha * (rate - self.audio_per_wall_second)
            )
        self.batches += 1


@dataclass
class Engine:
    model: SpeechModel
    limits: BatchLimits
    max_queue: int
    metrics: Metrics
    # Deadline slope: segment k of a request is due (k + 1) slots after its arrival, where a
    # slot is the measured time of one model call, never less than this floor. A fixed slot
    # shorter than a real model call would leave a long text's segments all overdue, ahead
    # of every newcomer; the measured slot keeps them spread out behind new one-liners.
    segment_slo_s: float = 0.5
    stats: EngineStats = field(default_factory=EngineStats)
    # Most seconds one model call may take before its batch fails (0: no deadline).
    batch_timeout_s: float = 0.0
    # Let a newcomer's first segments run at the next preemption point of a long request's
    # call in progress (engine/preempt.py). None: on CPU, where a call costs the sum of its
    # segments and cannot be shared; on a GPU a batch costs about one segment anyway.
    preempt: bool | None = None
    # Model calls that may run at once (CPU), each on its own worker thread. 1: one worker
    # using all of torch's intra-op threads. With more, a call gets cores / running calls
    # intra-op threads when it starts (a lone call still gets them all) and adopts its new
    # share at each preemption point: torch's threads scale poorly, two one-thread calls
    # did 1.9x one call's work on 2 cores (bench/RESULTS.md finding G1). The model's
    # modules are stateless at inference, so calls may overlap.
    workers: int = 1
    # Niceness added to the model workers' threads (and the OpenMP threads they start,
    # which inherit it): the server's request handling, text threads and espeak-ng run
    # ahead of model calls when they need a core (engine/cpu.py, `lower_priority`).
    worker_nice: int = 0

    def __post_init__(self) -> None:
        self._waiting: dict[int, _Segment] = {}
        self._keys = itertools.count()
        self._requests = itertools.count()
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        # Segments in model calls now (the running batch and an urgent one nested in it).
        self._busy = 0
        # Workers with a call running: its batch, or None for an idle call (tuning probe).
        self._running: dict[_ModelWorker[Any], _Call | None] = {}
        self._finishing: set[asyncio.Task[None]] = set()
        self._urgent_task: asyncio.Task[None] | None = None
        self._cores = torch.get_num_threads()
        self._shared = _SharedCores(self._cores) if self.workers > 1 else None
        self._preemptive = (
            self.preempt if self.preempt is not None else not self.model.device.startswith("cuda")
        )
        self._accepting = True
        self._task: asyncio.Task[None] | None = None
        # One worker per device by default: one stream of batches is what keeps a GPU busy
        # without copying the model; on CPU `workers` may run calls side by side.
        self._worker_ids = itertools.count()
        self._pool: list[_ModelWorker[Any]] = [
            self._new_worker() for _ in range(max(1, self.workers))
        ]
        # Workers given up on after a batch timeout whose call has not returned yet.
        self._abandoned: list[_ModelWorker[Any]] = []
        # Calls that run on the worker only while no segment waits (start-up tuning probes).
        self._idle_calls: collections.deque[
            tuple[Callable[[], Any], asyncio.Future[Any], int | None]
        ] = collections.deque()

    # ---- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self._schedule(), name="voicefleet-scheduler"
        )

    def stop_accepting(self) -> None:
        self._accepting = False
        self._fail_idle_calls(EngineStopped("the server is draining"))

    async def wait_idle(self) -> None:
        await self._idle.wait()

    async def close(self) -> None:
        self._accepting = False
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for segment in self._waiting.values():
            if not segment.future.done():
                segment.future.set_exception(EngineStopped("the server is shutting down"))
        self._waiting.clear()
        self._fail_idle_calls(EngineStopped("the server is shutting down"))
        if self._urgent_task is not None:
            self._urgent_task.cancel()
        for worker in self._pool:
            worker.stop()
        # Let running batches finish, but never wait on a call the deadline gave up on.
        timeout = None if self.batch_timeout_s <= 0 else self.batch_timeout_s
        await asyncio.gather(*(asyncio.to_thread(w.join, timeout) for w in self._pool))

    # ---- admission and submission ----------------------------------------------------

    @property
    def queue_depth(self) -> int:
        return len(self._waiting)

    @property
    def queued_audio_seconds(self) -> float:
        return sum(s.estimated_audio_s for s in self._waiting.values())

    def retry_after_s(self) -> float:
        """How long until the queue has likely drained enough to admit new work."""
        rate = self.stats.audio_per_wall_second
        if rate <= 0:
            return 1.0
        return min(60.0, max(1.0, self.queued_audio_seconds / rate))

    def check_admission(self, segments: int) -> None:
        if not self._accepting:
            raise EngineStopped("the server is draining")
        # A request larger than the whole queue still runs when the queue is empty.
        if self._waiting and len(self._waiting) + segments > self.max_queue:
            raise QueueFull(self.retry_after_s())

    def submit(
        self, items: Sequence[SynthesisItem], *, slo_scale: float = 1.0, group: str = ""
    ) -> list[asyncio.Future[np.ndarray]]:
        """Queue a request's segments; their futures resolve in any order."""
        self.check_admission(len(items))
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        futures: list[asyncio.Future[np.ndarray]] = []
        progress = _Progress(segments=len(items))
        request = next(self._requests)
        for index, item in enumerate(items):
            key = next(self._keys)
            future: asyncio.Future[np.ndarray] = loop.create_future()
            estimate = len(item.token_ids) * self.stats.seconds_per_token / max(item.speed, 1e-3)
            self._waiting[key] = _Segment(
                key, item, future, now, index, request, slo_scale, group, estimate, progress
            )
            futures.append(future)
        self._idle.clear()
        self._publish_queue()
        self._wakeup.set()
        self._maybe_preempt()
        return futures

    def run_when_idle(self, fn: Callable[[], _R], threads: int | None = None) -> asyncio.Future[_R]:
        """Run `fn` on the model worker thread the next time no segment is waiting, at
        `threads` intra-op threads (default: every core).

        For start-up tuning probes: they time the real model on the real worker thread,
        never run beside a batch, and never start while a segment waits (one that arrives
        during a probe waits for it, as for a batch in flight). Calls run in order.
        """
        if not self._accepting:
            raise EngineStopped("the server is draining")
        future: asyncio.Future[_R] = asyncio.get_running_loop().create_future()
        self._idle_calls.append((fn, future, threads))
        self._wakeup.set()
        return future

    def set_limits(self, limits: BatchLimits) -> None:
        """New batch limits (from tuning); the next batch formed follows them."""
        self.limits = limits
        self.metrics.max_batch_size.set(limits.max_batch_size)

    @property
    def deadline_slot_s(self) -> float:
        return max(self.segment_slo_s, self.stats.batch_seconds)

    def cancel(self, futures: Sequence[asyncio.Future[np.ndarray]]) -> None:
        """Drop segments whose caller went away; running ones finish and are discarded."""
        for future in futures:
            future.cancel()
        for key in [k for k, s in self._waiting.items() if s.future.cancelled()]:
            del self._waiting[key]
        self._publish_queue()
        self._mark_idle_if_empty()

    # ---- the scheduling loop ---------------------------------------------------------

    async def _schedule(self) -> None:
        while True:
            free = [w for w in self._pool if w not in self._running]
            if not self._waiting and self._idle_calls and len(free) == len(self._pool):
                await self._run_idle_call(free[0], *self._idle_calls.popleft())
                continue
            timeout: float | None = None
            # A request's later segments wait for its first audio: rendered beside it on
            # another worker they would take half its cores and delay its first audio
            # (streamed time to first audio); once it is out they spread over the workers.
            ready = [s for s in self._waiting.values() if not s.progress.first_in_flight]
            if free and ready:
                decision = plan_batch(
                    [s.view(self.deadline_slot_s) for s in ready], self.limits, time.monotonic()
                )
                if decision.batch:
                    batch = [self._waiting.pop(key) for key in decision.batch]
                    self._publish_queue()
                    live = [s for s in batch if not s.future.cancelled()]
                    if live:
                        self._launch(live, free[0])
                    self._mark_idle_if_empty()
                    continue
                timeout = decision.wait_s
            # Nothing to start now: wait for a submission, a finished call, or the window.
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout)

    def _launch(self, batch: list[_Segment], worker: _ModelWorker[Any]) -> None:
        # Long-form work is preempted: a request with a segment rendered already, or with
        # more segments to come. A one-segment request's call never is, so one-liners do
        # not preempt each other.
        preemptible = all(
            s.progress.last_finished is not None or s.progress.segments > 1 for s in batch
        )
        claim = not preemptible and self._lone_newcomer_beside_long_form(batch)
        call = self._start(
            batch, urgent=False, worker=worker, preemptible=preemptible, claim=claim
        )
        self._running[worker] = call
        task = asyncio.get_running_loop().create_task(self._finish(call), name="voicefleet-call")
        self._finishing.add(task)
        task.add_done_callback(self._finishing.discard)

    async def _finish(self, call: _Call) -> None:
        try:
            await self._complete(call)
        except Exception:  # never expected: a lost batch must not stop the engine quietly
            log.exception("finishing a batch failed")
            for segment in call.batch:
                if not segment.future.done():
                    segment.future.set_exception(SynthesisError("the engine lost this batch"))
        finally:
            self._running.pop(call.worker, None)
            if len(self._pool) > 1:
                self._share_cores()  # the calls still running may take the freed cores
            self._mark_idle_if_empty()
            self._wakeup.set()  # a worker is free

    def _lone_newcomer_beside_long_form(self, batch: list[_Segment]) -> bool:
        """`batch` holds the only interactive newcomers, and every call running elsewhere
        is long-form work (or a tuning probe) that can wait at its next preemption point:
        the newcomer may claim every core, as an urgent call does (_SharedCores). With
        other newcomers queued it keeps its share instead: under load, two one-thread
        calls do more work than one two-thread call."""
        if self._shared is None or not self._running or not all(s.newcomer for s in batch):
            return False
        if any(call is not None and not call.preemptible for call in self._running.values()):
            return False
        return not any(s.newcomer for s in self._waiting.values())

    def _maybe_preempt(self) -> None:
        """Newcomers arrived while continuing work runs: send their most urgent segments
        to the worker as an urgent call, nested at the running call's next preemption point."""
        if not self._preemptive or self._urgent_task is not None:
            return
        if any(w not in self._running for w in self._pool):
            return  # a free worker takes the newcomer as its next batch
        target = next(
            (
                w
                for w, c in self._running.items()
                if w in self._pool and (c is None or c.preemptible)
            ),
            None,
        )
        if target is None:
            return
        # Interactive newcomers only: background work (jobs, slo_scale > 1) waits its turn.
        fresh = [s for s in self._waiting.values() if s.newcomer]
        if not fresh:
            return
        chosen = select_batch([s.view(self.deadline_slot_s) for s in fresh], self.limits)
        batch = [self._waiting.pop(w.key) for w in chosen]
        self._publish_queue()
        # A lone newcomer takes every core, pausing long-form calls on the other workers
        # (it then takes about its idle time). With more newcomers queued it renders
        # beside them on its host's share: two one-thread calls do more work than one
        # two-thread call, and under load throughput is what serves newcomers soonest.
        claim = len(fresh) == len(batch)
        self._urgent_task = asyncio.get_running_loop().create_task(
            self._run_urgent(self._start(batch, urgent=True, worker=target, claim=claim)),
            name="voicefleet-urgent",
        )

    async def _run_urgent(self, call: _Call) -> None:
        try:
            await self._complete(call)
        finally:
            self._urgent_task = None
            self._mark_idle_if_empty()
            self._maybe_preempt()  # another newcomer may have come meanwhile
            self._wakeup.set()

    def _start(
        self,
        batch: list[_Segment],
        urgent: bool,
        worker: _ModelWorker[Any],
        preemptible: bool = False,
        claim: bool = False,
    ) -> _Call:
        """Hand a batch to the worker now (an urgent one reaches the worker's urgent queue
        before the running call's next preemption point can pass)."""
        started = time.monotonic()
        for segment in batch:
            segment.progress.dispatched = True
            self.metrics.queue_wait.observe(started - segment.enqueued_at)
        token_counts = [len(s.item.token_ids) for s in batch]
        self.metrics.batch_size.observe(len(batch))
        self.metrics.padding_waste.observe(padding_waste(token_counts))
        self._busy += len(batch)
        # Several workers: this call's intra-op threads share the cores with the calls
        # running now (an urgent call nested in another keeps that call's threads).
        threads = None
        if len(self._pool) > 1 and not urgent:
            threads = self._share_cores(starting=worker)
            if claim:  # every core while the long-form calls beside it wait
                threads = worker.threads_wanted = self._cores
        render = functools.partial(
            self._render_counting_pauses, [s.item for s in batch], urgent, threads, claim
        )
        if not urgent:
            worker.yields_cores = preemptible  # set while the worker is free: no call runs
        submit = worker.submit_urgent if urgent else worker.submit
        return _Call(batch, submit(render), worker, started, preemptible)

    def _share_cores(self, starting: _ModelWorker[Any] | None = None) -> int:
        """Each running call's intra-op threads: cores / calls running (with `starting`),
        told to every running worker; returns the share."""
        running = set(self._running) | ({starting} if starting is not None else set())
        share = max(1, self._cores // max(1, len(running)))
        for worker in running:
            worker.threads_wanted = share
        return share

    async def _complete(self, call: _Call) -> None:
        """Wait for a call (within the batch deadline) and resolve its segments' futures."""
        batch = call.batch
        try:
            results, paused, timed_out = await self._outcome(call)
        finally:
            self._busy -= len(batch)
        finished = time.monotonic()
        # The call's own time: urgent calls nested in it do not count.
        wall = finished - call.started - paused
        self.metrics.batch_duration.observe(wall)
        for segment in batch:
            segment.progress.last_finished = finished
        audio_s = 0.0
        sampling_rate = self.model.sampling_rate
        for segment, result in zip(batch, results, strict=True):
            if segment.item.reran_fp32:
                self.metrics.fp32_reruns.inc()
            if isinstance(result, BaseException):
                self.metrics.failed_segments.labels(type(result).__name__).inc()
                if not segment.future.done():
                    segment.future.set_exception(result)
                continue
            audio_s += len(result) / sampling_rate
            if not segment.future.done():
                segment.future.set_result(result)
        self.metrics.audio_seconds.inc(audio_s)
        if not timed_out:
            self.stats.observe(sum(len(s.item.token_ids) for s in batch), audio_s, wall)

    async def _outcome(self, call: _Call) -> tuple[list[np.ndarray | BaseException], float, bool]:
        """(results, seconds paused for nested urgent calls, whether the deadline hit)."""
        job = asyncio.wrap_future(call.raw)
        worker = call.worker
        while self.batch_timeout_s > 0 and not await self._within_deadline(job, worker):
            self._abandon(worker)
            if not call.moved:
                return self._timed_out(job, len(call.batch)), 0.0, True
            # An urgent call queued behind the stuck one moved to its replacement.
            worker = worker.replaced_by or worker
        try:
            results, paused = await job
        except SynthesisTimeout as exc:  # an urgent call stuck inside a stuck call
            return [exc for _ in call.batch], 0.0, True
        return results, paused, False

    @property
    def call_threads(self) -> list[int]:
        """The intra-op thread counts a model call may run at: every core alone, a share
        of them beside other calls (oneDNN builds kernels per thread count as well)."""
        return call_thread_counts(self._cores, len(self._pool))

    async def _run_idle_call(
        self,
        worker: _ModelWorker[Any],
        fn: Callable[[], Any],
        future: asyncio.Future[Any],
        threads: int | None,
    ) -> None:
        if future.done():  # cancelled by its caller
            return
        if threads is None and len(self._pool) > 1:
            threads = self._cores  # alone: every core
        # One worker: the call's own thread count, then back to what batches run at.
        worker.threads_wanted = threads if len(self._pool) > 1 else None
        worker.yields_cores = True  # tuning probes make way for anyone
        self._running[worker] = None
        try:
            call = asyncio.wrap_future(
                worker.submit(lambda: self._timed_call(fn, threads, restore=len(self._pool) == 1))
            )
            if self.batch_timeout_s > 0 and not await self._within_deadline(call, worker):
                self._abandon(worker)
                self._timed_out(call, 0)
                if not future.done():
                    future.set_exception(SynthesisTimeout(self._timeout_message()))
                return
            result = await call
        except Exception as exc:
            if not future.done():
                future.set_exception(exc)
        else:
            if not future.done():
                future.set_result(result)
        finally:
            self._running.pop(worker, None)

    def _fail_idle_calls(self, exc: Exception) -> None:
        while self._idle_calls:
            _, future, _ = self._idle_calls.popleft()
            if not future.done():
                future.set_exception(exc)

    # ---- batch deadline --------------------------------------------------------------

    def _new_worker(self) -> _ModelWorker[Any]:
        return _ModelWorker(
            f"voicefleet-model-{next(self._worker_ids)}",
            self._preemptive,
            self._shared,
            nice=self.worker_nice,
        )

    async def _within_deadline(self, job: asyncio.Future[Any], worker: _ModelWorker[Any]) -> bool:
        """Wait for `job`; False once one of its model calls has run past the deadline."""
        while not job.done():
            started = worker.call_started or time.monotonic()
            remaining = started + self.batch_timeout_s - time.monotonic()
            if remaining <= 0:
                return False
            await asyncio.wait({job}, timeout=remaining)
        return True

    def _abandon(self, stuck: _ModelWorker[Any]) -> None:
        """Carry on with a fresh worker thread after a call on `stuck` ran past its deadline
        (unless another call's deadline already replaced it)."""
        if stuck not in self._pool:
            return
        log.error(
            "a model call ran past the %.1fs batch deadline; failing it and starting a fresh "
            "model worker (the stuck call keeps its thread until it returns)",
            self.batch_timeout_s,
        )
        stuck.abandoned_at = time.monotonic()
        stuck.stop()
        self._abandoned.append(stuck)
        fresh = self._new_worker()
        self._pool[self._pool.index(stuck)] = fresh
        stuck.replaced_by = fresh
        # Urgent calls waiting for the stuck call's next preemption point move over; one
        # running inside it is stuck with it.
        for urgent in stuck.take_urgent():
            fresh.put_urgent(urgent)
        stuck.fail_running_urgent(SynthesisTimeout(self._timeout_message()))

    def _timed_out(self, job: asyncio.Future[Any], size: int) -> list[np.ndarray | BaseException]:
        job.add_done_callback(lambda f: f.cancelled() or f.exception())  # never unretrieved
        self.metrics.batch_timeouts.inc()
        return [SynthesisTimeout(self._timeout_message()) for _ in range(size)]

    def _timeout_message(self) -> str:
        return f"the model did not finish this batch within {self.batch_timeout_s:g}s"

    def stuck_for_s(self) -> float:
        """How long the longest-stuck abandoned model call has run past its deadline (0: none)."""
        self._abandoned = [w for w in self._abandoned if w.alive]
        self.metrics.stuck_workers.set(len(self._abandoned))
        now = time.monotonic()
        return max((now - (w.abandoned_at or now) for w in self._abandoned), default=0.0)

    def _render_isolating(self, items: list[SynthesisItem]) -> list[np.ndarray | BaseException]:
        """Render a batch on the worker thread; on failure split it to isolate the culprit."""
        try:
            outputs = self._call_model(items)
            if len(outputs) != len(items):
                raise SynthesisError(
                    f"model returned {len(outputs)} outputs for {len(items)} inputs"
                )
            return list(outputs)
        except (torch.OutOfMemoryError, DeviceOutOfMemory) as exc:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if len(items) == 1:
                return [DeviceOutOfMemory(f"segment does not fit in device memory: {exc}")]
            self.metrics.oom_splits.inc()
            log.warning("out of memory on a batch of %d; splitting", len(items))
        except Exception as exc:
            if len(items) == 1:
                log.exception("segment failed")
                return [exc if isinstance(exc, SynthesisError) else SynthesisError(str(exc))]
            log.warning("batch of %d failed (%s); splitting to isolate", len(items), exc)
        middle = len(items) // 2
        return self._render_isolating(items[:middle]) + self._render_isolating(items[middle:])

    def _render_counting_pauses(
        self,
        items: list[SynthesisItem],
        urgent: bool,
        threads: int | None = None,
        claim: bool = False,
    ) -> tuple[list[np.ndarray | BaseException], float]:
        """`_render_isolating` (with `threads` intra-op threads on this worker thread, when
        given; a call that `claim`s runs with every core while long-form calls on the other
        workers wait), and the seconds urgent calls nested in it took."""
        if threads is not None:
            torch.set_num_threads(threads)  # OpenMP's count is this thread's own setting
        before = preempt.paused_seconds()
        cores = self._shared.claimed() if claim and self._shared else contextlib.nullcontext()
        # Nested inside a paused call, possibly within its autocast region, an urgent
        # render sets up its own precision.
        precision = torch.autocast("cpu", enabled=False) if urgent else contextlib.nullcontext()
        with precision, cores:
            results = self._render_isolating(items)
        return results, preempt.paused_seconds() - before

    def _call_model(self, items: list[SynthesisItem]) -> list[np.ndarray]:
        return self._timed_call(lambda: self.model.synthesize(items))

    @staticmethod
    def _timed_call(fn: Callable[[], _R], threads: int | None = None, restore: bool = False) -> _R:
        """One model call, timed for the batch deadline (`_within_deadline`). A call nested
        in another (urgent work at a preemption point) does not eat the other's deadline.
        `restore`: put the thread's intra-op thread count back afterwards."""
        previous = torch.get_num_threads()
        if threads is not None:
            torch.set_num_threads(threads)
        try:
            worker = _ModelWorker.current()
            if worker is None:
                return fn()
            outer = worker.call_started
            started = worker.call_started = time.monotonic()
            try:
                return fn()
            finally:
                worker.call_started = None if outer is None else outer + time.monotonic() - started
        finally:
            if restore and threads is not None:
                torch.set_num_threads(previous)

    def _publish_queue(self) -> None:
        self.metrics.queue_depth.set(len(self._waiting))
        self.metrics.queued_audio_seconds.set(self.queued_audio_seconds)

    def _mark_idle_if_empty(self) -> None:
        if not self._waiting and not self._busy:
            self._idle.set()
