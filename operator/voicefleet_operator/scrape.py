"""Reads server pods' Prometheus /metrics over HTTP for the memory guard.

Any failure (refused, timeout, non-200, garbage) is reported as None, never raised: the
guard treats an unreadable pod as "no information", which must never cause a restart.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import aiohttp

from voicefleet_operator import guard


async def fetch_metrics(
    session: aiohttp.ClientSession, url: str, timeout: float
) -> dict[str, float] | None:
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout)) as response:
            if response.status != 200:
                return None
            text = await response.text()
    except (aiohttp.ClientError, TimeoutError, OSError, UnicodeDecodeError):
        return None
    return guard.parse_metrics(text)


async def read_pods(
    session: aiohttp.ClientSession, urls: Mapping[str, str], timeout: float
) -> list[guard.Reading]:
    """One reading per pod in `urls` (pod name -> metrics URL), read concurrently."""
    names = list(urls)
    results = await asyncio.gather(*(fetch_metrics(session, urls[n], timeout) for n in names))
    return [guard.Reading.from_metrics(n, r) for n, r in zip(names, results, strict=True)]
