"""The engine's batch deadline and the test-only fault-injection wrapper, with a fake model."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

import numpy as np
import pytest
from voicefleet_server.engine.batcher import Engine
from voicefleet_server.engine.faults import FaultInjectingModel, parse_fault
from voicefleet_server.engine.model import SynthesisItem, SynthesisTimeout, Voice
from voicefleet_server.engine.scheduler import BatchLimits
from voicefleet_server.metrics import Metrics


class ToneModel:
    """Renders each item as a constant tone whose value is its first token id."""

    name = "tone"
    family = "fake"
    sampling_rate = 100
    voices: Sequence[Voice] = (Voice("default", "default"),)
    device = "cpu"

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.gate = threading.Event()
        self.gate.set()
        self.batches: list[list[int]] = []
        self.precision_passes: list[object] = []

    def tokenize(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    def warm_up(self) -> None:
        pass

    def synthesize(self, items: Sequence[SynthesisItem]) -> list[np.ndarray]:
        self.gate.wait()
        time.sleep(self.delay_s)
        self.batches.append([item.token_ids[0] for item in items])
        waves = self._run(items, "reduced")
        bad = [i for i, w in enumerate(waves) if not np.isfinite(w).all()]
        if bad:  # the VITS re-run, in miniature
            for i, wave in zip(bad, self._run([items[i] for i in bad], None), strict=True):
                items[i].reran_fp32 = True
                waves[i] = wave
        return waves

    def _run(self, items: Sequence[SynthesisItem], autocast: object) -> list[np.ndarray]:
        self.precision_passes.append(autocast)
        return [np.full(4, item.token_ids[0], dtype=np.float32) for item in items]


def engine_for(model: object, **kwargs: float) -> Engine:
    limits = BatchLimits(max_batch_size=8, max_padded_tokens=10_000, window_s=0.05)
    return Engine(model, limits, max_queue=64, metrics=Metrics(), **kwargs)  # type: ignore[arg-type]


def item(ident: int, fault: str | None = None) -> SynthesisItem:
    return SynthesisItem(token_ids=[ident] * 3, fault=fault)


def value(engine: Engine, name: str) -> float:
    sample = engine.metrics.registry.get_sample_value(name)
    return 0.0 if sample is None else sample


async def test_a_batch_past_its_deadline_fails_and_a_fresh_worker_takes_over() -> None:
    model = ToneModel()
    model.gate.clear()  # the model call hangs
    engine = engine_for(model, batch_timeout_s=0.3)
    engine.start()
    stuck = engine.submit([item(1)])
    with pytest.raises(SynthesisTimeout):
        await asyncio.wait_for(stuck[0], 5)
    assert engine.stuck_for_s() > 0
    assert value(engine, "voicefleet_batch_timeouts_total") == 1
    # The stuck call still holds its thread; new work runs on a fresh one. Let the
    # model go, so the next call is not stuck too, and the old thread finishes.
    model.gate.set()
    (wave,) = await asyncio.wait_for(asyncio.gather(*engine.submit([item(2)])), 5)
    assert set(wave.tolist()) == {2}
    deadline = time.monotonic() + 5
    while engine.stuck_for_s() > 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert engine.stuck_for_s() == 0
    await engine.close()


async def test_the_deadline_is_per_model_call_not_per_split_and_retry() -> None:
    # Isolating a failing item takes several calls; each fits the deadline, their sum not.
    model = ToneModel(delay_s=0.15)
    engine = engine_for(FaultInjectingModel(model), batch_timeout_s=0.4)  # type: ignore[arg-type]
    engine.start()
    futures = [engine.submit([item(i, "raise" if i == 1 else None)])[0] for i in range(1, 9)]
    results = await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), 20)
    assert len(model.batches) * 0.15 > 0.4
    assert [isinstance(r, Exception) for r in results] == [True] + [False] * 7
    assert not isinstance(results[0], SynthesisTimeout)
    await engine.close()


async def test_no_deadline_means_a_slow_batch_just_finishes() -> None:
    model = ToneModel()
    model.gate.clear()
    engine = engine_for(model)
    engine.start()
    futures = engine.submit([item(3)])
    await asyncio.sleep(0.3)
    model.gate.set()
    (wave,) = await asyncio.wait_for(asyncio.gather(*futures), 5)
    assert set(wave.tolist()) == {3}
    await engine.close()


async def test_injected_raise_fails_only_its_item() -> None:
    engine = engine_for(FaultInjectingModel(ToneModel()))  # type: ignore[arg-type]
    engine.start()
    futures = [engine.submit([item(i, "raise" if i == 5 else None)])[0] for i in range(1, 9)]
    results = await asyncio.gather(*futures, return_exceptions=True)
    failed = [i for i, r in zip(range(1, 9), results, strict=True) if isinstance(r, Exception)]
    assert failed == [5]
    assert "injected fault" in str(results[4])
    for ident, result in zip(range(1, 9), results, strict=True):
        if ident != 5:
            assert isinstance(result, np.ndarray) and set(result.tolist()) == {ident}
    await engine.close()


async def test_injected_oom_splits_the_batch_and_everyone_succeeds() -> None:
    model = ToneModel()
    engine = engine_for(FaultInjectingModel(model))  # type: ignore[arg-type]
    engine.start()
    futures = [engine.submit([item(i, "oom" if i == 2 else None)])[0] for i in range(1, 7)]
    results = await asyncio.gather(*futures)
    assert [int(r[0]) for r in results] == list(range(1, 7))
    assert value(engine, "voicefleet_oom_splits_total") >= 1
    assert [2] in model.batches  # the culprit ended up rendered alone
    await engine.close()


async def test_injected_nan_triggers_the_float32_rerun_of_that_item_only() -> None:
    model = ToneModel()
    engine = engine_for(FaultInjectingModel(model))  # type: ignore[arg-type]
    engine.start()
    futures = [engine.submit([item(i, "nan" if i == 3 else None)])[0] for i in range(1, 5)]
    results = await asyncio.gather(*futures)
    assert all(np.isfinite(r).all() for r in results)
    assert value(engine, "voicefleet_fp32_reruns_total") == 1
    assert None in model.precision_passes
    await engine.close()


async def test_injected_hang_is_cut_off_by_the_deadline() -> None:
    wrapper = FaultInjectingModel(ToneModel())
    engine = engine_for(wrapper, batch_timeout_s=0.3)  # type: ignore[arg-type]
    engine.start()
    with pytest.raises(SynthesisTimeout):
        await asyncio.wait_for(engine.submit([item(1, "hang=30")])[0], 5)
    (wave,) = await asyncio.wait_for(asyncio.gather(*engine.submit([item(2)])), 5)
    assert set(wave.tolist()) == {2}
    wrapper.release()
    await engine.close()


@pytest.mark.parametrize(
    ("raw", "parsed"),
    [
        ("raise", "raise"),
        (" OOM ", "oom"),
        ("nan", "nan"),
        ("hang", "hang"),
        ("hang=2.5", "hang=2.5"),
    ],
)
def test_fault_header_values(raw: str, parsed: str) -> None:
    assert parse_fault(raw) == parsed


@pytest.mark.parametrize("raw", ["", "explode", "raise=1", "hang=x", "hang=-1", "hang=99999"])
def test_bad_fault_header_values_are_refused(raw: str) -> None:
    with pytest.raises(ValueError):
        parse_fault(raw)
