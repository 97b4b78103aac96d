"""Side-by-side measurements of TTS servers with different HTTP APIs (bench/vs_piper.py).

A `Peer` knows how to ask one server for a WAV of a text (voicefleet's OpenAI-style
`/v1/audio/speech`, Piper's `/synthesize`). The measurements are the same for every peer:
one-liners one after another on an idle server (idle p50/p95), the same one-liners while a
long text keeps the server busy (loaded p95, fairness = loaded p95 / idle p95), and a
closed loop of a mixed load at N concurrent streams (audio seconds per wall second).
Non-streamed WAV on both sides, so each latency is request to last byte.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from voicefleet_bench import stats


@dataclass(frozen=True, slots=True)
class Peer:
    name: str
    url: str
    kind: str  # "voicefleet" or "piper"

    def request(self, text: str) -> tuple[str, dict[str, Any]]:
        """(path, JSON body) asking this server for a WAV of `text`."""
        if self.kind == "piper":
            return "/synthesize", {"text": text}
        return "/v1/audio/speech", {
            "model": "tts-1", "input": text, "voice": "alloy", "response_format": "wav",
        }


@dataclass
class Timed:
    latency_s: float
    audio_s: float
    ok: bool
    status: int | str = 200


@dataclass
class Phase:
    """One measured phase of one peer."""

    results: list[Timed] = field(default_factory=list)
    wall_s: float = 0.0

    @classmethod
    def pooled(cls, phases: Sequence[Phase]) -> Phase:
        """The same phase measured in several rounds, as one: every request, all the wall time."""
        return cls([r for p in phases for r in p.results], sum(p.wall_s for p in phases))

    @property
    def latencies(self) -> list[float]:
        return [r.latency_s for r in self.results if r.ok]

    @property
    def audio_s(self) -> float:
        return sum(r.audio_s for r in self.results if r.ok)

    @property
    def errors(self) -> int:
        return sum(1 for r in self.results if not r.ok)

    def summary(self) -> dict[str, Any]:
        return {
            "latency_s": stats.summarize(self.latencies),
            "requests": len(self.results),
            "errors": self.errors,
            "audio_s": round(self.audio_s, 3),
            "wall_s": round(self.wall_s, 3),
            "throughput_audio_s_per_s": (
                round(self.audio_s / self.wall_s, 3) if self.wall_s > 0 else None
            ),
        }


async def speak(client: httpx.AsyncClient, peer: Peer, text: str, timeout_s: float = 600) -> Timed:
    path, body = peer.request(text)
    started = time.perf_counter()
    try:
        response = await client.post(peer.url + path, json=body, timeout=timeout_s)
    except httpx.HTTPError as exc:
        return Timed(time.perf_counter() - started, 0.0, False, f"error: {type(exc).__name__}")
    latency = time.perf_counter() - started
    if response.status_code != 200:
        return Timed(latency, 0.0, False, response.status_code)
    return Timed(latency, stats.audio_seconds(response.content, "wav", 22050), True)


async def sequential(client: httpx.AsyncClient, peer: Peer, texts: Sequence[str]) -> Phase:
    phase = Phase()
    started = time.perf_counter()
    for text in texts:
        phase.results.append(await speak(client, peer, text))
    phase.wall_s = time.perf_counter() - started
    return phase


async def while_busy(
    client: httpx.AsyncClient, peer: Peer, probes: Sequence[str], long_text: str
) -> tuple[Phase, int]:
    """The probes one after another while `long_text` keeps the server busy (sent again
    whenever it finishes; the first probe goes once it has been sent and had a head start
    of one probe's worth of time). Returns the probes' phase and how often the long text ran."""
    runs = 0

    async def keep_busy() -> None:
        nonlocal runs
        while True:
            runs += 1
            await speak(client, peer, long_text)

    busy = asyncio.create_task(keep_busy())
    await asyncio.sleep(0.5)  # the long text is in (its first segments are rendering)
    try:
        phase = await sequential(client, peer, probes)
    finally:
        busy.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await busy
    return phase, runs


async def closed_loop(
    client: httpx.AsyncClient, peer: Peer, texts: Sequence[str], streams: int, seconds: float
) -> Phase:
    """`streams` callers, each sending its next text as soon as the last answer came, for
    `seconds`; answers still running at the end are awaited and counted (wall grows)."""
    phase = Phase()
    cycle = itertools.cycle(texts)
    deadline = time.perf_counter() + seconds
    started = time.perf_counter()

    async def caller() -> None:
        while time.perf_counter() < deadline:
            phase.results.append(await speak(client, peer, next(cycle)))

    await asyncio.gather(*(caller() for _ in range(streams)))
    phase.wall_s = time.perf_counter() - started
    return phase


def fairness(idle: Phase, loaded: Phase) -> float | None:
    return stats.ratio(
        stats.percentile(loaded.latencies, 95) if loaded.latencies else None,
        stats.percentile(idle.latencies, 95) if idle.latencies else None,
    )


def verdicts(summary: dict[str, dict[str, Any]], ours: str, theirs: str) -> dict[str, Any]:
    """The issue's targets: fairness <= half of the peer's; throughput at 8 streams >= it."""
    mine, peer = summary[ours], summary[theirs]
    out: dict[str, Any] = {}
    if mine.get("fairness") is not None and peer.get("fairness") is not None:
        out["fairness_vs_half_of_peer"] = {
            "value": mine["fairness"], "target": f"<= {peer['fairness'] / 2:.3f}",
            "passed": mine["fairness"] <= peer["fairness"] / 2,
        }
    streams = sorted(set(mine.get("throughput", {})) & set(peer.get("throughput", {})), key=int)
    if streams:
        top = streams[-1]
        ours_t, theirs_t = mine["throughput"][top], peer["throughput"][top]
        if ours_t is not None and theirs_t:
            out[f"throughput_at_{top}_vs_peer"] = {
                "value": round(ours_t / theirs_t, 3),
                "target": ">= 1",
                "passed": ours_t >= theirs_t,
            }
    return out


def table(summary: dict[str, dict[str, Any]]) -> str:
    streams = sorted({s for v in summary.values() for s in v.get("throughput", {})}, key=int)
    head = ["server", "idle p50", "idle p95", "loaded p95", "fairness"]
    head += [f"{s} str a/s" for s in streams]
    rows = ["  ".join(f"{h:>11}" for h in head)]
    for name, v in summary.items():
        cells = [name, _f(v.get("idle_p50_s")), _f(v.get("idle_p95_s")),
                 _f(v.get("loaded_p95_s")), _f(v.get("fairness"))]
        cells += [_f(v.get("throughput", {}).get(s)) for s in streams]
        rows.append("  ".join(f"{c:>11}" for c in cells))
    return "\n".join(rows)


def _f(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"
