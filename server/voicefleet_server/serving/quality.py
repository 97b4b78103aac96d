"""Checks the audio of every returned segment, off the event loop, and never in the way.

`QualityMonitor.watch(futures, ...)` hooks each segment's future: when it completes with
audio, one background thread measures it (engine/quality.py), feeds the SNR histogram and
the anomaly counters, and logs each anomaly with the request id. The response never waits
for a check and is never changed by one; the engine's float32 re-run of NaN/silent
reduced-precision output has already happened by then.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import threading
import time
from collections.abc import Sequence

import numpy as np

from voicefleet_server.engine.model import SynthesisItem
from voicefleet_server.engine.quality import QualityLimits, assess
from voicefleet_server.metrics import Metrics

log = logging.getLogger(__name__)

# Checks waiting for the thread beyond this are skipped (counted): under an extreme burst
# the monitor sheds its own work rather than hold audio in memory.
MAX_BACKLOG = 1024


class QualityMonitor:
    def __init__(self, limits: QualityLimits, metrics: Metrics) -> None:
        self.limits = limits
        self.metrics = metrics
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="quality")
        self._backlog = 0
        self._lock = threading.Lock()
        self._idle = threading.Event()
        self._idle.set()

    def watch(
        self,
        futures: Sequence[asyncio.Future[np.ndarray]],
        items: Sequence[SynthesisItem],
        sampling_rate: int,
        request_id: str | None,
    ) -> None:
        """Check each segment's audio once its future has it (`index`: its position)."""
        for index, (future, item) in enumerate(zip(futures, items, strict=True)):
            future.add_done_callback(
                functools.partial(
                    self._done, item=item, sampling_rate=sampling_rate,
                    request_id=request_id, index=index,
                )
            )  # fmt: skip

    def _done(
        self,
        future: asyncio.Future[np.ndarray],
        item: SynthesisItem,
        sampling_rate: int,
        request_id: str | None,
        index: int,
    ) -> None:
        if future.cancelled() or future.exception() is not None:
            return  # not returned: nothing to judge
        with self._lock:
            if self._backlog >= MAX_BACKLOG:
                self.metrics.quality_checks_skipped.inc()
                return
            self._backlog += 1
            self._idle.clear()
        self._pool.submit(self._check, future.result(), item, sampling_rate, request_id, index)

    def _check(
        self,
        wave: np.ndarray,
        item: SynthesisItem,
        sampling_rate: int,
        request_id: str | None,
        index: int,
    ) -> None:
        try:
            started = time.thread_time()
            characters = item.characters
            quality = assess(
                wave,
                sampling_rate,
                characters,
                self.limits,
                speed=item.speed,
                nonfinite=item.nonfinite,
            )
            self.metrics.quality_check_duration.observe(time.thread_time() - started)
            if quality.snr_db is not None:
                self.metrics.output_snr_db.observe(quality.snr_db)
            for kind in quality.anomalies:
                self.metrics.output_anomalies.labels(kind).inc()
            if quality.anomalies:
                log.warning(
                    "audio anomaly %s in request %s, segment %d: %.2f s for %d characters, "
                    "SNR %s dB, clipped %.4f, silent %.2f%s",
                    ",".join(quality.anomalies),
                    request_id or "-",
                    index,
                    quality.seconds,
                    characters,
                    "-" if quality.snr_db is None else f"{quality.snr_db:.1f}",
                    quality.clipping_ratio,
                    quality.silence_ratio,
                    " (re-rendered in float32)" if item.reran_fp32 else "",
                )
        except Exception:  # a check must never take anything else down
            log.exception("audio quality check failed")
        finally:
            with self._lock:
                self._backlog -= 1
                if self._backlog == 0:
                    self._idle.set()

    def wait_idle(self, timeout: float) -> bool:
        """True once every queued check has run (tests, drain)."""
        return self._idle.wait(timeout)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
