"""The engine with a fake model: exactly-own results, isolation of faults, fairness,
admission. The fake renders each item as a constant tone whose length and value
identify it, so any cross-talk shows."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pytest
import torch
from polling import wait_for
from voicefleet_server.engine import preempt
from voicefleet_server.engine.batcher import Engine, EngineStopped, QueueFull
from voicefleet_server.engine.model import SynthesisItem, SynthesisTimeout, Voice
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


async def test_a_streamed_paragraphs_first_segment_runs_alone_where_batches_cost_more() -> None:
    """Bench finding F3: with max batch 8 a paragraph's segments shared one batch, so its
    first audio waited for all of them. With request share 1 (a CPU) each runs alone."""
    model = FakeModel()
    engine = engine_for(model, max_batch_size=8, window_s=0.0)
    engine.start()
    await asyncio.gather(*engine.submit([item(i) for i in range(10, 14)]))
    assert model.batches == [[10], [11], [12], [13]]
    await engine.close()


async def test_a_request_fills_its_share_where_batching_is_cheap() -> None:
    model = FakeModel()
    engine = engine_for(model, max_batch_size=8, window_s=0.0)
    engine.set_limits(BatchLimits(8, 10_000, 0.0, request_share=4))
    engine.start()
    await asyncio.gather(*engine.submit([item(i) for i in range(10, 16)]))
    assert model.batches == [[10, 11, 12, 13], [14, 15]]
    await engine.close()


async def test_a_newcomer_gets_a_place_in_the_next_batch_ahead_of_a_long_texts_own() -> None:
    model = FakeModel()
    engine = engine_for(model, max_batch_size=4, window_s=0.0)
    engine.set_limits(BatchLimits(4, 10_000, 0.0, request_share=4))
    model.release.clear()
    engine.start()
    long_futures = engine.submit([item(1) for _ in range(12)])
    await asyncio.sleep(0.05)  # the first batch of 4 is in the (held) model
    newcomer = engine.submit([item(99)])[0]
    model.release.set()
    await newcomer
    assert model.batches[0] == [1, 1, 1, 1]
    assert 99 in model.batches[1]
    await asyncio.gather(*long_futures)
    await engine.close()


async def test_idle_calls_run_only_when_no_segment_waits() -> None:
    model = FakeModel()
    engine = engine_for(model, max_batch_size=1, window_s=0.0)
    order: list[str] = []
    model.release.clear()
    engine.start()
    segments = engine.submit([item(1), item(2), item(3)])
    await asyncio.sleep(0.05)  # segment 1 is in the (held) model; 2 and 3 wait
    probe = engine.run_when_idle(lambda: order.append(f"probe after {len(model.batches)}"))
    model.release.set()
    await asyncio.gather(*segments, probe)
    assert order == ["probe after 3"]
    await engine.close()


async def test_a_segment_arriving_during_an_idle_call_runs_before_the_next_one() -> None:
    model = FakeModel()
    engine = engine_for(model, max_batch_size=1, window_s=0.0)
    gate = threading.Event()
    order: list[str] = []

    def first_probe() -> None:
        gate.wait(5)
        order.append(f"probe 1 after {len(model.batches)} batches")

    def second_probe() -> None:
        order.append(f"probe 2 after {len(model.batches)} batches")

    engine.start()
    probes = [engine.run_when_idle(first_probe), engine.run_when_idle(second_probe)]
    await asyncio.sleep(0.05)  # probe 1 runs (held)
    segment = engine.submit([item(7)])[0]
    gate.set()
    await asyncio.gather(segment, *probes)
    assert order == ["probe 1 after 0 batches", "probe 2 after 1 batches"]
    await engine.close()


async def test_idle_calls_end_when_the_engine_drains() -> None:
    model = FakeModel()
    engine = engine_for(model, max_batch_size=1, window_s=0.0)
    model.release.clear()
    engine.start()
    segment = engine.submit([item(1)])[0]
    await asyncio.sleep(0.05)
    probe = engine.run_when_idle(lambda: "measured")
    engine.stop_accepting()
    with pytest.raises(EngineStopped):
        await probe
    with pytest.raises(EngineStopped):
        engine.run_when_idle(lambda: "too late")
    model.release.set()
    await segment
    await engine.close()


async def test_an_idle_call_returns_its_result_and_its_exception() -> None:
    engine = engine_for(FakeModel())
    engine.start()
    assert await engine.run_when_idle(lambda: 42) == 42

    def broken() -> None:
        raise ValueError("probe failed")

    with pytest.raises(ValueError, match="probe failed"):
        await engine.run_when_idle(broken)
    await engine.close()


class SteppedModel(FakeModel):
    """Renders item `stepped` (from its `after`+1-th start on) in steps with preemption
    points between them; the second step waits for `gate`. Logs every item's start and end."""

    def __init__(self, stepped: int = 1, after: int = 1) -> None:
        super().__init__()
        self.stepped, self.after = stepped, after
        self.gate = threading.Event()
        self.log: list[tuple[str, int]] = []
        self.lock = threading.Lock()

    def synthesize(self, items: Sequence[SynthesisItem]) -> list[np.ndarray]:
        ids = [item.token_ids[0] for item in items]
        with self.lock:
            self.log += [("start", i) for i in ids]
        if self.stepped in ids and self.log.count(("start", self.stepped)) > self.after:
            preempt.preemption_point()
            self.gate.wait(5)
            preempt.preemption_point()
        waves = super().synthesize(items)
        with self.lock:
            self.log += [("end", i) for i in ids]
        return waves


async def test_a_newcomer_runs_at_a_preemption_point_of_a_long_texts_segment() -> None:
    model = SteppedModel()
    engine = engine_for(model, max_batch_size=1, window_s=0.0)
    engine.start()
    long_futures = engine.submit([item(1) for _ in range(3)])
    await long_futures[0]
    await wait_for(lambda: model.log.count(("start", 1)) == 2, "the second long segment starts")
    newcomer = engine.submit([item(2)])[0]
    model.gate.set()
    assert set((await newcomer).tolist()) == {2}
    assert [set(w.tolist()) for w in await asyncio.gather(*long_futures)] == [{1}] * 3
    second_long_end = [i for i, e in enumerate(model.log) if e == ("end", 1)][1]
    assert model.log.index(("end", 2)) < second_long_end, model.log
    await engine.close()


async def test_without_preemption_the_newcomer_waits_for_the_segment() -> None:
    model = SteppedModel()
    engine = Engine(
        model, BatchLimits(1, 10_000, 0.0), max_queue=64, metrics=Metrics(), preempt=False
    )  # type: ignore[arg-type]
    engine.start()
    long_futures = engine.submit([item(1) for _ in range(3)])
    await long_futures[0]
    await wait_for(lambda: model.log.count(("start", 1)) == 2, "the second long segment starts")
    newcomer = engine.submit([item(2)])[0]
    model.gate.set()
    await newcomer
    second_long_end = [i for i, e in enumerate(model.log) if e == ("end", 1)][1]
    assert model.log.index(("start", 2)) > second_long_end, model.log
    await asyncio.gather(*long_futures)
    await engine.close()


async def test_a_newcomers_first_call_is_not_preempted_by_another_newcomer() -> None:
    model = SteppedModel(stepped=3, after=0)
    engine = engine_for(model, max_batch_size=1, window_s=0.0)
    engine.start()
    first = engine.submit([item(3)])[0]
    await wait_for(lambda: ("start", 3) in model.log, "the first newcomer starts")
    second = engine.submit([item(4)])[0]
    model.gate.set()
    await asyncio.gather(first, second)
    assert model.log.index(("end", 3)) < model.log.index(("start", 4)), model.log
    await engine.close()


async def test_a_newcomer_waiting_on_a_stuck_call_moves_to_the_fresh_worker() -> None:
    """The long segment hangs between two preemption points past the batch deadline: it
    fails with a timeout, and the newcomer queued for its next point runs on the fresh
    worker instead of failing with it."""
    model = SteppedModel()  # the gate is never opened: the second long segment hangs
    engine = Engine(
        model,  # type: ignore[arg-type]
        BatchLimits(1, 10_000, 0.0),
        max_queue=64,
        metrics=Metrics(),
        batch_timeout_s=0.5,
    )
    engine.start()
    long_futures = engine.submit([item(1) for _ in range(3)])
    await long_futures[0]
    await wait_for(lambda: model.log.count(("start", 1)) == 2, "the second long segment starts")
    newcomer = engine.submit([item(2)])[0]
    assert set((await asyncio.wait_for(newcomer, 10)).tolist()) == {2}
    with pytest.raises(SynthesisTimeout):
        await long_futures[1]
    assert engine.metrics.batch_timeouts._value.get() == 1
    model.gate.set()
    await asyncio.gather(long_futures[2])
    await engine.close()


async def test_background_work_does_not_preempt() -> None:
    model = SteppedModel()
    engine = engine_for(model, max_batch_size=1, window_s=0.0)
    engine.start()
    long_futures = engine.submit([item(1) for _ in range(3)])
    await long_futures[0]
    await wait_for(lambda: model.log.count(("start", 1)) == 2, "the second long segment starts")
    job = engine.submit([item(5)], slo_scale=10.0)[0]
    model.gate.set()
    await asyncio.gather(job, *long_futures)
    second_long_end = [i for i, e in enumerate(model.log) if e == ("end", 1)][1]
    assert model.log.index(("start", 5)) > second_long_end, model.log
    await engine.close()


def two_worker_engine(model: FakeModel) -> Engine:
    """Two CPU model workers, batches of one, no window."""
    return Engine(
        model,  # type: ignore[arg-type]
        BatchLimits(1, 10_000, 0.0),
        max_queue=64,
        metrics=Metrics(),
        workers=2,
    )


@contextlib.contextmanager
def four_torch_threads() -> Iterator[None]:
    """The engine shares the cores torch reports when it starts: four, on any machine."""
    cores = torch.get_num_threads()
    torch.set_num_threads(4)
    try:
        yield
    finally:
        torch.set_num_threads(cores)


class OverlapModel(FakeModel):
    """Each call waits at a barrier for a second call to be running at the same time, and
    records the intra-op threads it ran with."""

    def __init__(self) -> None:
        super().__init__()
        self.barrier = threading.Barrier(2, timeout=5)
        self.threads: dict[int, int] = {}

    def synthesize(self, items: Sequence[SynthesisItem]) -> list[np.ndarray]:
        self.threads[items[0].token_ids[0]] = torch.get_num_threads()
        if items[0].token_ids[0] < 50:
            self.barrier.wait()  # raises (the item fails) unless another call overlaps
        return super().synthesize(items)


async def test_two_workers_run_two_calls_at_once_sharing_the_cores() -> None:
    model = OverlapModel()
    engine = two_worker_engine(model)
    engine.start()
    a, b = engine.submit([item(1)])[0], engine.submit([item(2)])[0]
    assert [set(w.tolist()) for w in await asyncio.gather(a, b)] == [{1}, {2}]
    cores = torch.get_num_threads()
    # The first call started alone (every core), the second beside it (half of them).
    assert model.threads == {1: cores, 2: max(1, cores // 2)}
    await asyncio.gather(engine.submit([item(60)])[0])  # alone again: every core
    assert model.threads[60] == cores
    await engine.close()


async def test_one_worker_never_overlaps_calls() -> None:
    model = OverlapModel()
    engine = engine_for(model, max_batch_size=1, window_s=0.0)
    engine.start()
    results = await asyncio.gather(
        engine.submit([item(1)])[0], engine.submit([item(2)])[0], return_exceptions=True
    )
    assert all(isinstance(r, BaseException) for r in results)  # each waited alone at the barrier
    await engine.close()


async def test_with_a_free_worker_a_newcomer_runs_there_instead_of_preempting() -> None:
    model = SteppedModel(stepped=1, after=0)  # the long segment holds its worker at its gate
    engine = two_worker_engine(model)
    engine.start()
    long_segment = engine.submit([item(1)])[0]
    await wait_for(lambda: ("start", 1) in model.log, "the long segment starts")
    newcomer = engine.submit([item(2)])[0]
    await asyncio.wait_for(newcomer, 10)  # with one worker it would wait for the gate
    assert ("end", 1) not in model.log
    model.gate.set()
    await long_segment
    await engine.close()


async def test_a_one_liner_preempts_the_first_call_of_a_long_request() -> None:
    """A long text just submitted is long-form work from its first segment on: a one-liner
    arriving during that segment need not wait for it (the text's first audio is delayed
    by one one-liner)."""
    model = SteppedModel(stepped=1, after=0)
    engine = engine_for(model, max_batch_size=1, window_s=0.0)
    engine.start()
    long_futures = engine.submit([item(1) for _ in range(3)])
    await wait_for(lambda: ("start", 1) in model.log, "the long text's first segment starts")
    newcomer = engine.submit([item(2)])[0]
    model.gate.set()
    await asyncio.gather(newcomer, *long_futures)
    assert model.log.index(("end", 2)) < model.log.index(("end", 1)), model.log
    await engine.close()


class RebalancedModel(FakeModel):
    """Item 1 records its intra-op threads at each of three preemption points: alone, while
    item 2 runs on the other worker (held there by `gate`), and after item 2 has ended."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.second_running = threading.Event()
        self.second_done = threading.Event()
        self.threads: list[int] = []

    def synthesize(self, items: Sequence[SynthesisItem]) -> list[np.ndarray]:
        if items[0].token_ids[0] == 2:
            self.second_running.set()
            self.gate.wait(5)
            return super().synthesize(items)
        preempt.preemption_point()
        self.threads.append(torch.get_num_threads())
        assert self.second_running.wait(5)
        preempt.preemption_point()
        self.threads.append(torch.get_num_threads())
        self.gate.set()
        assert self.second_done.wait(5)
        preempt.preemption_point()
        self.threads.append(torch.get_num_threads())
        return super().synthesize(items)


async def test_a_running_call_gives_up_cores_to_a_call_beside_it_and_takes_them_back() -> None:
    with four_torch_threads():
        model = RebalancedModel()
        engine = two_worker_engine(model)
        engine.start()
        first = engine.submit([item(1)])[0]
        await wait_for(lambda: len(model.threads) == 1, "the first call runs alone")
        second = engine.submit([item(2)])[0]
        await second
        model.second_done.set()
        await first
        assert model.threads == [4, 2, 4]
        await engine.close()


class LongFormModel(FakeModel):
    """Segments below 10 tick at preemption points until the newcomer (any other id) has
    looked: it records the ticks before and after a pause and its own thread count."""

    def __init__(self) -> None:
        super().__init__()
        self.ticks: dict[int, int] = {}
        self.looked = threading.Event()
        self.seen: dict[str, Any] = {}
        self.looker = 50

    def synthesize(self, items: Sequence[SynthesisItem]) -> list[np.ndarray]:
        ident = items[0].token_ids[0]
        if ident < 10:
            deadline = time.monotonic() + 10
            while not self.looked.is_set() and time.monotonic() < deadline:
                preempt.preemption_point()
                self.ticks[ident] = self.ticks.get(ident, 0) + 1
                time.sleep(0.002)
        elif ident == self.looker:
            before = dict(self.ticks)
            time.sleep(0.2)
            self.seen = {"before": before, "after": dict(self.ticks)}
            self.seen["threads"] = torch.get_num_threads()
            self.looked.set()
        return super().synthesize(items)


async def long_texts_on_both_workers(
    model: LongFormModel,
) -> tuple[Engine, list[asyncio.Future[np.ndarray]]]:
    """A two-worker engine rendering two long texts (two segments each: long-form work),
    one on each worker."""
    engine = two_worker_engine(model)
    engine.start()
    long_texts = [*engine.submit([item(1), item(5)]), *engine.submit([item(2), item(6)])]
    await wait_for(lambda: len(model.ticks) == 2, "both workers render a long text")
    return engine, long_texts


async def test_urgent_work_on_one_worker_pauses_long_form_work_on_the_others() -> None:
    with four_torch_threads():
        model = LongFormModel()
        engine, long_texts = await long_texts_on_both_workers(model)
        newcomer = engine.submit([item(50)])[0]
        await asyncio.gather(newcomer, *long_texts)
        # While the newcomer ran (nested in one worker), neither long segment moved on,
        # and the newcomer had every core.
        assert model.seen["before"] == model.seen["after"], model.seen
        assert model.seen["threads"] == 4
        await engine.close()


async def test_a_lone_newcomer_on_a_free_worker_pauses_long_form_work_beside_it() -> None:
    """A long text's first segment leaves the other worker free (its later segments wait for
    its first audio); a one-liner that starts there runs with every core while the long
    segment waits, not on half of them beside it."""
    with four_torch_threads():
        model = LongFormModel()
        engine = two_worker_engine(model)
        engine.start()
        long_text = engine.submit([item(1), item(5)])
        await wait_for(lambda: 1 in model.ticks, "the long text's first segment renders")
        newcomer = engine.submit([item(50)])[0]
        await asyncio.gather(newcomer, *long_text)
        assert model.seen["before"] == model.seen["after"], model.seen
        assert model.seen["threads"] == 4
        await engine.close()


async def test_a_requests_later_segments_wait_for_its_first_audio_then_spread() -> None:
    """Beside its first segment on another worker, a later one would take half the cores
    and delay the first audio."""
    model = SteppedModel(stepped=1, after=0)  # segment 1 holds at its gate
    engine = two_worker_engine(model)
    engine.start()
    futures = engine.submit([item(1), item(2), item(3)])
    await wait_for(lambda: ("start", 1) in model.log, "the first segment starts")
    await asyncio.sleep(0.2)  # a free worker had time to take segment 2
    assert ("start", 2) not in model.log, model.log
    model.gate.set()
    await asyncio.gather(*futures)
    assert model.log.index(("start", 2)) > model.log.index(("end", 1)), model.log
    await engine.close()


async def test_with_more_newcomers_queued_urgent_work_keeps_its_share_of_the_cores() -> None:
    """Under load two one-thread calls do more than one two-thread call: a newcomer with
    others queued behind it does not pause the other workers."""
    with four_torch_threads():
        model = LongFormModel()
        engine, long_texts = await long_texts_on_both_workers(model)
        model.looker = 51  # 50 goes first alone; 51 then leaves 52 queued behind it
        newcomers = [engine.submit([item(i)])[0] for i in (50, 51, 52)]
        await asyncio.gather(*newcomers, *long_texts)
        moved = [
            k for k in model.seen["before"] if model.seen["after"][k] > model.seen["before"][k]
        ]
        assert moved, model.seen  # the long text on the other worker went on
        assert model.seen["threads"] == 2
        await engine.close()


class NicenessModel(FakeModel):
    """Records the niceness of the thread each model call runs on."""

    def __init__(self) -> None:
        super().__init__()
        self.niceness: list[int] = []

    def synthesize(self, items: Sequence[SynthesisItem]) -> list[np.ndarray]:
        self.niceness.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        return super().synthesize(items)


async def test_model_calls_run_at_the_workers_lowered_priority() -> None:
    base = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    for nice in (0, 4):
        model = NicenessModel()
        limits = BatchLimits(max_batch_size=4, max_padded_tokens=10_000, window_s=0.01)
        engine = Engine(model, limits, max_queue=64, metrics=Metrics(), worker_nice=nice)  # type: ignore[arg-type]
        engine.start()
        await engine.submit([item(1)])[0]
        await engine.close()
        assert model.niceness == [min(19, base + nice)]
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == base
