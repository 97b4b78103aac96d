"""The engine: a queue of segments, a scheduler task, and one model worker thread.

Each segment carries an `asyncio.Future`. The scheduler task asks `plan_batch` what to
run, hands the batch to the worker thread (the event loop never blocks on the model),
and resolves every future it owns, with audio or with an exception, so no caller is
left hanging and none receives another's audio. A failing batch is split in halves
until the faulty item is isolated; an out-of-memory batch is split the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch

from voicefleet_server.engine.model import (
    DeviceOutOfMemory,
    SpeechModel,
    SynthesisError,
    SynthesisItem,
)
from voicefleet_server.engine.scheduler import (
    BatchLimits,
    Waiting,
    padding_waste,
    plan_batch,
    segment_deadline,
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


@dataclass(eq=False)
class _Segment:
    key: int
    item: SynthesisItem
    future: asyncio.Future[np.ndarray]
    enqueued_at: float
    deadline: float
    group: str
    estimated_audio_s: float

    def view(self) -> Waiting:
        return Waiting(
            self.key, len(self.item.token_ids), self.enqueued_at, self.deadline, self.group
        )


@dataclass
class EngineStats:
    """Running estimates the engine learns from its own outputs."""

    seconds_per_token: float = _INITIAL_SECONDS_PER_TOKEN
    audio_per_wall_second: float = 0.0
    batches: int = 0
    segments: int = 0

    def observe(self, tokens: int, audio_s: float, wall_s: float) -> None:
        alpha = 0.2
        if tokens > 0:
            self.seconds_per_token += alpha * (audio_s / tokens - self.seconds_per_token)
        if wall_s > 0:
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
    # Deadline slope: segment k of a request is due (k + 1) * slo after its arrival.
    segment_slo_s: float = 0.5
    stats: EngineStats = field(default_factory=EngineStats)

    def __post_init__(self) -> None:
        self._waiting: dict[int, _Segment] = {}
        self._keys = itertools.count()
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._running_batch = 0
        self._accepting = True
        self._task: asyncio.Task[None] | None = None
        # One worker per device: the model is not re-entrant, and one stream of batches
        # is what keeps a GPU busy without copying the model.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="voicefleet-model")

    # ---- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self._schedule(), name="voicefleet-scheduler"
        )

    def stop_accepting(self) -> None:
        self._accepting = False

    @property
    def accepting(self) -> bool:
        return self._accepting

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
        self._executor.shutdown(wait=True, cancel_futures=True)

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
        for index, item in enumerate(items):
            key = next(self._keys)
            future: asyncio.Future[np.ndarray] = loop.create_future()
            deadline = segment_deadline(now, index, self.segment_slo_s * slo_scale)
            estimate = len(item.token_ids) * self.stats.seconds_per_token / max(item.speed, 1e-3)
            self._waiting[key] = _Segment(key, item, future, now, deadline, group, estimate)
            futures.append(future)
        self._idle.clear()
        self._publish_queue()
        self._wakeup.set()
        return futures

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
            decision = plan_batch(
                [s.view() for s in self._waiting.values()], self.limits, time.monotonic()
            )
            if not decision.batch:
                self._wakeup.clear()
                timeout = decision.wait_s if self._waiting else None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), timeout)
                continue
            batch = [self._waiting.pop(key) for key in decision.batch]
            self._publish_queue()
            live = [s for s in batch if not s.future.cancelled()]
            if live:
                await self._run(live)
            self._mark_idle_if_empty()

    async def _run(self, batch: list[_Segment]) -> None:
        started = time.monotonic()
        for segment in batch:
            self.metrics.queue_wait.observe(started - segment.enqueued_at)
        token_counts = [len(s.item.token_ids) for s in batch]
        self.metrics.batch_size.observe(len(batch))
        self.metrics.padding_waste.observe(padding_waste(token_counts))
        self._running_batch = len(batch)
        try:
            results = await asyncio.get_running_loop().run_in_executor(
                self._executor, self._render_isolating, [s.item for s in batch]
            )
        finally:
            self._running_batch = 0
        wall = time.monotonic() - started
        self.metrics.batch_duration.observe(wall)
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
        self.stats.observe(sum(token_counts), audio_s, wall)

    def _render_isolating(self, items: list[SynthesisItem]) -> list[np.ndarray | BaseException]:
        """Render a batch on the worker thread; on failure split it to isolate the culprit."""
        try:
            outputs = self.model.synthesize(items)
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

    def _publish_queue(self) -> None:
        self.metrics.queue_depth.set(len(self._waiting))
        self.metrics.queued_audio_seconds.set(self.queued_audio_seconds)

    def _mark_idle_if_empty(self) -> None:
        if not self._waiting and not self._running_batch:
            self._idle.set()
