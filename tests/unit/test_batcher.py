"""The engine with a fake model: exactly-own results, isolation of faults, fairness,
admission. The fake renders each item as a constant tone whose length and value
identify it, so any cross-talk shows."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

import numpy as np
import pytest
import torch
from voicefleet_server.engine.batcher import Engine, EngineStopped, QueueFull
from voicefleet_server.engine.model import SynthesisItem, Voice
from voicefleet_server.engine.scheduler import BatchLimits
from voicefleet_server.metrics import Metrics


class FakeModel:
    name = "fake"
    family = "fake"
    sampling_rate = 100
    voices: Sequence[Voice] = (Voice("default", "default"),)
    device = "cpu"

    def __init__(
        self, poison: int | None = None, oom_above: int | None = None, delay_s: float = 0.0
    ) -> None:
        self.batches: list[list[int]] = []
        self.poison = poison
        self.oom_above = oom_above
        self.delay_s = delay_s
        self.release = threading.Event()
        self.release.set()

    def tokenize(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    def warm_up(self) -> None:
        pass

    def synthesize(self, items: Sequence[SynthesisItem]) -> list[np.ndarray]:
        self.release.wait(5)
        time.sleep(self.delay_s)
        ids = [item.token_ids[0] for item in items]
        if self.oom_above is not None and len(items) > self.oom_above:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        self.batches.append(ids)
        if self.poison in ids:
            raise RuntimeError("this item breaks the model")
        return [np.full(len(item.token_ids), item.token_ids[0], dtype=np.float32) for item in items]


def engine_for(model: FakeModel, **limits: float) -> Engine:
    spec = {"max_batch_size": 4, "max_padded_tokens": 10_000, "window_s": 0.01} | limits
    return Engine(model, BatchLimits(**spec), max_queue=64, metrics=Metrics())  # type: ignore[arg-type]


def item(ident: int, length: int = 3) -> SynthesisItem:
    return SynthesisItem(token_ids=[ident] * length)


async def test_every_caller_gets_exactly_its_own_audio() -> None:
    engine = engine_for(FakeModel())
    engine.start()
    futures = [engine.submit([item(i, length=i + 1)])[0] for i in range(1, 30)]
    results = await asyncio.gather(*futures)
    for ident, wave in zip(range(1, 30), results, strict=True):
        assert len(wave) == ident + 1 and set(wave.tolist()) == {ident}
    await engine.close()


async def test_a_failing_item_fails_alone_and_its_batch_mates_succeed() -> None:
    model = FakeModel(poison=7)
    engine = engine_for(model, max_batch_size=8, window_s=0.05)
    engine.start()
    futures = [engine.submit([item(i)])[0] for i in range(1, 9)]
    results = await asyncio.gather(*futures, return_exceptions=True)
    failed = [i for i, r in zip(range(1, 9), results, strict=True) if isinstance(r, BaseException)]
    assert failed == [7]
    assert all(set(r.tolist()) == {i} for i, r in zip(range(1, 9), results, strict=True) if i != 7)
    assert len(model.batches[0]) == 8  # they really shared a batch first
    await engine.close()


async def test_out_of_memory_splits_the_batch_and_retries() -> None:
    model = FakeModel(oom_above=2)
    engine = engine_for(model, max_batch_size=8, window_s=0.05)
    engine.start()
    results = await asyncio.gather(*[engine.submit([item(i)])[0] for i in range(1, 9)])
    assert [set(r.tolist()) for r in results] == [{i} for i in range(1, 9)]
    assert all(len(batch) <= 2 for batch in model.batches)
    assert engine.metrics.oom_splits._value.get() >= 1
    await engine.close()


async def test_a_short_request_is_served_between_a_long_requests_segments() -> None:
    model = FakeModel()
    engine = engine_for(model, max_batch_size=1, window_s=0.0)
    engine.start()
    model.release.clear()  # hold the worker so the queue builds up deterministically
    long_futures = engine.submit([item(1) for _ in range(20)])
    await asyncio.sleep(0.05)
    short = engine.submit([item(2)])[0]
    model.release.set()
    await short
    done_long = sum(f.done() for f in long_futures)
    assert done_long < 5, f"short request waited behind {done_long} segments of the long one"
    await asyncio.gather(*long_futures)
    await engine.close()


async def test_admission_refuses_beyond_the_queue_limit_with_a_retry_hint() -> None:
    model = FakeModel()
    engine = Engine(model, BatchLimits(1, 100, 0.0), max_queue=3, metrics=Metrics())  # type: ignore[arg-type]
    model.release.clear()
    engine.start()
    first = engine.submit([item(1), item(1), item(1)])
    with pytest.raises(QueueFull) as refused:
        engine.submit([item(2)])
    assert refused.value.retry_after_s >= 1
    model.release.set()
    await asyncio.gather(*first)
    await engine.close()


async def test_cancelled_segments_are_dropped_from_the_queue() -> None:
    model = FakeModel()
    engine = engine_for(model, max_batch_size=1, window_s=0.0)
    model.release.clear()
    engine.start()
    futures = engine.submit([item(i) for i in range(1, 11)])
    await asyncio.sleep(0.05)
    engine.cancel(futures[2:])
    model.release.set()
    await asyncio.gather(*futures[:2])
    await engine.wait_idle()
    rendered = [ids[0] for ids in model.batches]
    assert rendered == [1, 2]
    await engine.close()


async def test_draining_refuses_new_work_and_finishes_accepted_work() -> None:
    engine = engine_for(FakeModel())
    engine.start()
    accepted = engine.submit([item(1), item(2)])
    engine.stop_accepting()
    with pytest.raises(EngineStopped):
        engine.submit([item(3)])
    await asyncio.wait_for(engine.wait_idle(), 5)
    assert all(f.done() and not f.exception() for f in accepted)
    await engine.close()


async def test_fairness_holds_when_model_calls_take_longer_than_the_deadline_floor() -> None:
    """Bench finding F5: with a fixed 0.5 s slot and slower model calls, a long text's
    segments were all overdue and ran ahead of every newcomer. Slots now follow the
    measured model-call time."""
    model = FakeModel(delay_s=0.05)
    engine = Engine(
        model,  # type: ignore[arg-type]
        BatchLimits(1, 10_000, 0.0),
        max_queue=64,
        metrics=Metrics(),
        segment_slo_s=0.001,  # a floor far below the real call time
    )
    engine.start()
    engine.stats.observe(tokens=3, audio_s=0.03, wall_s=0.05)  # calls measured at 50 ms
    model.release.clear()
    long_futures = engine.submit([item(1) for _ in range(20)])
    await asyncio.sleep(0.05)
    model.release.set()
    await asyncio.gather(*long_futures[:3])  # the long text is under way
    short = engine.submit([item(2)])[0]
    await short
    done_long = sum(f.done() for f in long_futures)
    assert done_long <= 6, f"the one-liner waited behind {done_long} of 20 long segments"
    await asyncio.gather(*long_futures)
    await engine.close()


class _UnderestimatingEngine(Engine):
    """An engine whose measured slot is far shorter than its model calls."""

    @property
    def deadline_slot_s(self) -> float:
        return self.segment_slo_s


async def test_fairness_holds_when_the_slot_underestimates_model_calls() -> None:
    """The long text falls behind its schedule, yet a newcomer still waits at most a
    couple of segments: a request is due one slot after its last segment started."""
    model = FakeModel(delay_s=0.05)
    engine = _UnderestimatingEngine(
        model,  # type: ignore[arg-type]
        BatchLimits(1, 10_000, 0.0),
        max_queue=64,
        metrics=Metrics(),
        segment_slo_s=0.001,
    )
    engine.start()
    long_futures = engine.submit([item(1) for _ in range(20)])
    await asyncio.gather(*long_futures[:3])
    short = engine.submit([item(2)])[0]
    await short
    done_long = sum(f.done() for f in long_futures)
    assert done_long <= 6, f"the one-liner waited behind {done_long} of 20 long segments"
    await asyncio.gather(*long_futures)
    await engine.close()
