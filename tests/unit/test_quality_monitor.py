"""The quality monitor on a real event loop: every segment that returns audio is checked
off the loop, counted and, when anomalous, logged with its request id; cancelled or failed
segments are not judged; nothing waits for a check."""

from __future__ import annotations

import asyncio
import logging

import numpy as np
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from voicefleet_server.engine.model import SynthesisItem
from voicefleet_server.engine.quality import QualityLimits
from voicefleet_server.metrics import Metrics
from voicefleet_server.serving.quality import QualityMonitor

RATE = 16_000


def speech_like(seconds: float, seed: int) -> np.ndarray:
    """Bursts of Gamma-distributed amplitudes between pauses: what WADA models speech as."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    wave = rng.gamma(0.4, 0.05, n) * rng.choice([-1.0, 1.0], n)
    envelope = (np.sin(np.arange(n) / RATE * 2 * np.pi * 2) > -0.3).astype(float)
    return (wave * envelope).astype(np.float32)


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(metrics.registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_segments_are_checked_counted_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    metrics = Metrics()
    monitor = QualityMonitor(QualityLimits(), metrics)
    loop = asyncio.get_running_loop()
    futures: list[asyncio.Future[np.ndarray]] = [loop.create_future() for _ in range(5)]
    items = [SynthesisItem([1], characters=40) for _ in futures]
    monitor.watch(futures, items, RATE, "req-123")
    futures[0].set_result(speech_like(3.0, 0))  # fine
    noise = np.random.default_rng(1).standard_normal(3 * RATE) * 0.2
    futures[1].set_result(noise.astype(np.float32))
    futures[2].set_result(np.zeros(3 * RATE, np.float32))  # silent
    futures[3].cancel()  # client went away: not returned, not judged
    futures[4].set_exception(RuntimeError("segment failed"))
    with caplog.at_level(logging.WARNING, "voicefleet_server.serving.quality"):
        await asyncio.sleep(0)  # done callbacks run on the loop
        assert await asyncio.to_thread(monitor.wait_idle, 10)
    found = samples(metrics)
    assert found[("voicefleet_quality_check_seconds_count", ())] == 3
    assert found[("voicefleet_output_snr_db_count", ())] == 2  # silence has no SNR
    anomalies = {
        dict(k[1])["kind"]: v
        for k, v in found.items()
        if k[0] == "voicefleet_output_anomalies_total"
    }
    assert anomalies == {
        "nan": 0, "silence": 1, "clipping": 0, "low_snr": 1, "too_short": 0, "too_long": 0,
    }  # fmt: skip
    logged = [r.getMessage() for r in caplog.records]
    assert len(logged) == 2 and all("request req-123" in m for m in logged)
    assert any("low_snr" in m and "segment 1" in m for m in logged)
    assert any("silence" in m and "segment 2" in m for m in logged)
    monitor.close()


async def test_nonfinite_items_and_speed_reach_the_check() -> None:
    metrics = Metrics()
    monitor = QualityMonitor(QualityLimits(), metrics)
    loop = asyncio.get_running_loop()
    futures: list[asyncio.Future[np.ndarray]] = [loop.create_future() for _ in range(2)]
    zeroed = SynthesisItem([1], characters=40)
    zeroed.nonfinite = True  # the guard zeroed NaN samples
    fast = SynthesisItem([1], speed=4.0, characters=40)  # 0.5 s for 40 characters at speed 4
    monitor.watch(futures, [zeroed, fast], RATE, None)
    futures[0].set_result(speech_like(3.0, 2))
    futures[1].set_result(speech_like(0.5, 3))
    await asyncio.sleep(0)
    assert await asyncio.to_thread(monitor.wait_idle, 10)
    found = samples(metrics)
    kinds = {dict(k[1])["kind"]: v for k, v in found.items()
             if k[0] == "voicefleet_output_anomalies_total" and v}  # fmt: skip
    assert kinds == {"nan": 1}
    monitor.close()
