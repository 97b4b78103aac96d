"""Overload soak on a real server: measure what it sustains, offer ten times that in open
loop (arrivals do not wait for answers) in repeated bursts, and check that every request
gets 200, or 429/503 with Retry-After; none is lost; admitted requests keep a bounded p95;
and resident memory comes back to its level after each burst instead of growing."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from hardening_figures import add, record
from server_process import start_server

TEXT = "A sentence to keep the model busy for a moment. " * 2
OVERLOAD = 10
BURST_S = 2.5
BURSTS = 3
# Generous: timings on a shared 2-core machine are noisy; the point is "bounded", not fast.
P95_BOUND_S = 30.0
RSS_GROWTH_BOUND = 64 * 2**20


@dataclass
class Outcome:
    status: int  # 0: no answer (transport error)
    latency_s: float
    retry_after: str | None


def body() -> dict[str, object]:
    return {"model": "tts-1", "voice": "alloy", "input": TEXT, "response_format": "pcm"}


async def one(client: httpx.AsyncClient) -> Outcome:
    started = time.monotonic()
    try:
        response = await client.post("/v1/audio/speech", json=body())
    except httpx.TransportError:
        return Outcome(0, time.monotonic() - started, None)
    return Outcome(
        response.status_code, time.monotonic() - started, response.headers.get("retry-after")
    )


async def capacity(url: str, seconds: float = 2.0, callers: int = 4) -> float:
    """Requests per second the server completes with a few callers always waiting."""
    done = 0
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        deadline = time.monotonic() + seconds
        started = time.monotonic()

        async def caller() -> None:
            nonlocal done
            while time.monotonic() < deadline:
                outcome = await one(client)
                assert outcome.status == 200, outcome
                done += 1

        await asyncio.gather(*(caller() for _ in range(callers)))
        return done / (time.monotonic() - started)


async def burst(url: str, rate: float, seconds: float) -> list[Outcome]:
    """Open loop: one request every 1/rate seconds, whatever the answers."""
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        tasks = []
        started = time.monotonic()
        n = 0
        while (due := started + n / rate) < started + seconds:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            tasks.append(asyncio.create_task(one(client)))
            n += 1
        return await asyncio.gather(*tasks)


def gauge(url: str, name: str) -> float:
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not exported")


def wait_idle(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (
            gauge(url, "voicefleet_inflight_requests") == 0
            and gauge(url, "voicefleet_queue_depth") == 0
        ):
            return
        time.sleep(0.1)
    raise AssertionError("the server did not go idle after the burst")


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))] if ordered else 0.0


# A soak (three bursts, memory compared across them): ~50 s of the default suite's longest
# call, measured with --durations. The quick check of the same contract (429 with
# Retry-After, never a 500) stays in the default suite: test_overload_and_drain.py.
@pytest.mark.slow
def test_ten_times_the_sustainable_rate_in_repeated_bursts(
    tiny_model_dir: str, tmp_path: Path
) -> None:
    server = start_server(
        tiny_model_dir,
        tmp_path,
        "--no-autotune",
        "--max-batch-size",
        "4",
        "--max-queue",
        "8",
        "--cache",
        "off",
    )
    try:
        sustainable = asyncio.run(capacity(server.url))
        wait_idle(server.url)
        rss = [gauge(server.url, "process_resident_memory_bytes")]
        offered = OVERLOAD * sustainable
        statuses: Counter[int] = Counter()
        admitted: list[float] = []
        for _ in range(BURSTS):
            outcomes = asyncio.run(burst(server.url, offered, BURST_S))
            for outcome in outcomes:
                statuses[outcome.status] += 1
                if outcome.status == 200:
                    admitted.append(outcome.latency_s)
                else:
                    assert outcome.status in (429, 503), outcome
                    assert outcome.retry_after is not None and int(outcome.retry_after) >= 1
            wait_idle(server.url)
            rss.append(gauge(server.url, "process_resident_memory_bytes"))
        total = sum(statuses.values())
        shed = statuses[429] + statuses[503]
        figures = {
            "sustainable_rps": round(sustainable, 1),
            "offered_rps": round(offered, 1),
            "overload_ratio": OVERLOAD,
            "bursts": BURSTS,
            "requests": total,
            "statuses": dict(sorted(statuses.items())),
            "shed_share": round(shed / max(total, 1), 3),
            "admitted_p50_s": round(sorted(admitted)[len(admitted) // 2], 3) if admitted else None,
            "admitted_p95_s": round(p95(admitted), 3),
            "rss_mib_after_each_burst": [round(r / 2**20, 1) for r in rss],
        }
        record("overload", figures)
        print(f"overload soak: {figures}")
        add("requests_lost", statuses[0])
        assert statuses[0] == 0, "requests got no answer"
        assert set(statuses) <= {200, 429, 503}
        assert statuses[200] > 0 and shed > 0, statuses
        assert p95(admitted) < P95_BOUND_S
        # Memory: no growth from burst to burst beyond a generous margin (the first
        # burst may warm allocator caches; later ones must not keep adding).
        assert rss[-1] - rss[1] < RSS_GROWTH_BOUND, figures
        assert max(rss[1:]) - rss[0] < 4 * RSS_GROWTH_BOUND, figures
        # And it still serves normally afterwards.
        assert (
            httpx.post(f"{server.url}/v1/audio/speech", json=body(), timeout=60).status_code == 200
        )
    finally:
        server.stop()
