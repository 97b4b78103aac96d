"""Synchronous helpers the ratio scripts use to put load on a running server.

Each call opens its own client, discovers the served model (one warm-up request), runs one
stage or a series of timed requests, and returns the same records `voicefleet bench`
writes, so scripts stay short and measure exactly what the CLI measures.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Sequence
from typing import Any

from voicefleet_bench import load


def _target(url: str, stream_format: str | None) -> load.Target:
    return load.Target(url=url, stream_format=stream_format)


def closed_loop(
    url: str, work: Sequence[tuple[str, str]], *, concurrency: int, duration_s: float,
    stream_format: str | None = None,
) -> dict[str, Any]:
    """Keep `concurrency` requests in flight for `duration_s`, cycling through `work`
    ((kind, text) pairs); returns the stage report (throughput, latency, server metrics)."""

    async def go() -> dict[str, Any]:
        async with load.new_client() as client:
            target = await load.discover(client, url, _target(url, stream_format))
            run = await load.run_closed_loop(
                client, target, itertools.cycle(work), concurrency=concurrency,
                duration_s=duration_s,
            )
        return load.stage_report(run)

    return asyncio.run(go())


def open_loop(
    url: str, arrivals: Sequence[load.Arrival], *, rate: float, duration_s: float,
    stream_format: str | None = None, drain_timeout_s: float = 120.0,
) -> dict[str, Any]:
    """Send `arrivals` open-loop (each at its time); returns the stage report."""

    async def go() -> dict[str, Any]:
        async with load.new_client() as client:
            target = await load.discover(client, url, _target(url, stream_format))
            run = await load.run_open_loop(
                client, target, arrivals, offered_rate_rps=rate, duration_s=duration_s,
                drain_timeout_s=drain_timeout_s,
            )
        return load.stage_report(run)

    return asyncio.run(go())


def sequential(
    url: str, requests: Sequence[tuple[str, str, str | None]], *,
    seeds: Sequence[int | None] | None = None, pause_s: float = 0.0,
) -> list[load.RequestResult]:
    """Send (kind, text, stream_format) requests one after the other on an idle server.

    `seeds[i]` is request i's seed (unseeded when None or absent). Seeded non-streamed
    requests may be answered by the server's result cache: repeat a seed only on purpose.
    """

    async def go() -> list[load.RequestResult]:
        out: list[load.RequestResult] = []
        async with load.new_client() as client:
            base = await load.discover(client, url, _target(url, None))
            for i, (kind, text, stream_format) in enumerate(requests):
                target = load.Target(**{**vars(base), "stream_format": stream_format})
                out.append(await load.send(client, target, kind, text, time.perf_counter(),
                                           seed=seeds[i] if seeds and i < len(seeds) else None))
                if pause_s:
                    await asyncio.sleep(pause_s)
        return out

    return asyncio.run(go())
