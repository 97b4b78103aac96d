"""The open-loop load generator: Poisson arrivals of mixed texts against /v1/audio/speech.

Each request is timed on the client (latency to last byte, time to first audio byte) and
its audio length is measured from the returned bytes. Arrivals never wait for responses
(open loop), so an overloaded server shows up as growing latency and 429s, not as a
politely slowed client. /metrics is sampled before, during and after each stage. A closed
loop (N requests always in flight) is offered too, for measuring saturation throughput.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

from voicefleet_bench import metrics, stats


@dataclass
class Target:
    """Where and how to send speech requests."""

    url: str
    model: str = "tts-1"
    voice: str = "alloy"
    response_format: str = "pcm"
    stream_format: str | None = None  # None, "audio" or "sse"
    sample_rate: int = 16000
    timeout_s: float = 300.0


@dataclass
class Arrival:
    at: float  # seconds after the stage start
    kind: str
    text: str


@dataclass
class RequestResult:
    kind: str
    chars: int
    scheduled_s: float
    status: int | str  # HTTP status, or "timeout" / "error: <type>"
    latency_s: float | None = None
    ttfa_s: float | None = None
    audio_s: float = 0.0
    finished_s: float | None = None  # seconds after the stage start
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == 200


@dataclass
class StageRun:
    """Raw outcome of one stage: per-request results, timing and /metrics snapshots."""

    offered_rate_rps: float | None
    duration_s: float
    results: list[RequestResult]
    wall_s: float
    metrics_before: metrics.Snapshot = field(default_factory=dict)
    metrics_after: metrics.Snapshot = field(default_factory=dict)
    metrics_samples: list[metrics.Snapshot] = field(default_factory=list)
    concurrency: int | None = None


async def discover(client: httpx.AsyncClient, url: str, target: Target) -> Target:
    """Fill in the served model id, a voice and the sample rate (from one warm-up WAV request)."""
    models = (await client.get(f"{url}/v1/models")).json().get("data") or []
    if models:
        target.model = models[0]["id"]
    try:
        voices = (await client.get(f"{url}/v1/audio/voices")).json().get("data") or []
        if voices:
            target.voice = voices[0]["id"]
    except (httpx.HTTPError, ValueError):
        pass
    resp = await client.post(
        f"{url}/v1/audio/speech",
        json={"model": target.model, "input": "Warm up.", "voice": target.voice,
              "response_format": "wav"},
        timeout=target.timeout_s,
    )
    resp.raise_for_status()
    rate, _channels, _bits, _n = stats.wav_data_bytes(resp.content)
    target.sample_rate = rate or target.sample_rate
    return target


async def scrape(client: httpx.AsyncClient, url: str) -> metrics.Snapshot:
    try:
        resp = await client.get(f"{url}/metrics", timeout=10.0)
        resp.raise_for_status()
        return metrics.parse(resp.text)
    except (httpx.HTTPError, ValueError):
        return {}


def _decode_sse(lines: list[str]) -> bytes:
    audio = bytearray()
    for line in lines:
        if not line.startswith("data:"):
            continue
        try:
            event = json.loads(line[5:].strip())
        except ValueError:
            continue
        if event.get("type") == "speech.audio.delta":
            audio += base64.b64decode(event.get("audio", ""))
    return bytes(audio)


async def send(
    client: httpx.AsyncClient, target: Target, kind: str, text: str, t0: float, *,
    scheduled_s: float = 0.0, seed: int | None = None,
) -> RequestResult:
    """One speech request, timed from the moment it is sent (never raises)."""
    body: dict[str, Any] = {
        "model": target.model, "input": text, "voice": target.voice,
        "response_format": target.response_format,
    }
    if target.stream_format:
        body["stream_format"] = target.stream_format
    if seed is not None:
        body["seed"] = seed
    result = RequestResult(kind=kind, chars=len(text), scheduled_s=scheduled_s, status="error")
    start = time.perf_counter()
    try:
        async with client.stream(
            "POST", f"{target.url}/v1/audio/speech", json=body, timeout=target.timeout_s
        ) as resp:
            result.status = resp.status_code
            chunks: list[bytes] = []
            async for chunk in resp.aiter_bytes():
                if chunk and result.ttfa_s is None:
                    result.ttfa_s = time.perf_counter() - start
                chunks.append(chunk)
        end = time.perf_counter()
        result.latency_s = end - start
        result.finished_s = end - t0
        data = b"".join(chunks)
        if resp.status_code != 200:
            result.ttfa_s = None
            result.error = data[:200].decode("utf-8", "replace")
        else:
            if target.stream_format == "sse":
                data = _decode_sse(data.decode("utf-8", "replace").splitlines())
            result.audio_s = stats.audio_seconds(data, target.response_format, target.sample_rate)
    except httpx.TimeoutException:
        result.status = "timeout"
        result.finished_s = time.perf_counter() - t0
    except (httpx.HTTPError, ValueError, RuntimeError) as exc:
        result.status = f"error: {type(exc).__name__}"
        result.error = str(exc)[:200]
        result.finished_s = time.perf_counter() - t0
    return result


async def _sample_metrics(
    client: httpx.AsyncClient, url: str, out: list[metrics.Snapshot], interval: float,
) -> None:
    while True:
        snap = await scrape(client, url)
        if snap:
            out.append(snap)
        await asyncio.sleep(interval)


def new_client(max_connections: int = 1024) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=64)
    return httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(300.0, connect=10.0))


async def run_open_loop(
    client: httpx.AsyncClient,
    target: Target,
    arrivals: Sequence[Arrival],
    *,
    offered_rate_rps: float | None,
    duration_s: float,
    drain_timeout_s: float = 120.0,
    metrics_interval_s: float = 1.0,
    on_done: Callable[[RequestResult], None] | None = None,
    seed: int | None = None,
) -> StageRun:
    """Send every arrival at its time, whatever happened to earlier ones, then wait for all.

    Requests still unanswered `drain_timeout_s` after the last arrival count as "timeout".
    """
    samples: list[metrics.Snapshot] = []
    before = await scrape(client, target.url)
    sampler = asyncio.create_task(_sample_metrics(client, target.url, samples, metrics_interval_s))
    t0 = time.perf_counter()

    async def fire(index: int, arrival: Arrival) -> RequestResult:
        delay = arrival.at - (time.perf_counter() - t0)
        if delay > 0:
            await asyncio.sleep(delay)
        res = await send(client, target, arrival.kind, arrival.text, t0, scheduled_s=arrival.at,
                         seed=None if seed is None else seed + index)
        if on_done:
            on_done(res)
        return res

    tasks = [asyncio.create_task(fire(i, a)) for i, a in enumerate(arrivals)]
    last_arrival = max((a.at for a in arrivals), default=0.0)
    deadline = max(last_arrival, duration_s) + drain_timeout_s
    done: set[asyncio.Task[RequestResult]] = set()
    pending: set[asyncio.Task[RequestResult]] = set()
    if tasks:
        remaining = max(deadline - (time.perf_counter() - t0), 0.1)
        done, pending = await asyncio.wait(tasks, timeout=remaining)
    for task in pending:
        task.cancel()
    results: list[RequestResult] = []
    for i, task in enumerate(tasks):
        if task in done and not task.cancelled() and task.exception() is None:
            results.append(task.result())
        else:
            a = arrivals[i]
            results.append(RequestResult(a.kind, len(a.text), a.at, "timeout"))
    wall = _wall(results, t0, duration_s)
    sampler.cancel()
    after = await scrape(client, target.url)
    return StageRun(offered_rate_rps, duration_s, results, wall, before, after, [*samples, after])


async def run_closed_loop(
    client: httpx.AsyncClient,
    target: Target,
    texts: Iterator[tuple[str, str]],
    *,
    concurrency: int,
    duration_s: float,
    metrics_interval_s: float = 1.0,
    on_done: Callable[[RequestResult], None] | None = None,
) -> StageRun:
    """`concurrency` workers each send (kind, text) requests back to back for `duration_s`.

    Requests start only inside the window; the ones in flight at its end are awaited. This
    keeps the server saturated without an unbounded queue: the way to measure capacity.
    """
    samples: list[metrics.Snapshot] = []
    before = await scrape(client, target.url)
    sampler = asyncio.create_task(_sample_metrics(client, target.url, samples, metrics_interval_s))
    t0 = time.perf_counter()
    results: list[RequestResult] = []

    async def worker() -> None:
        while time.perf_counter() - t0 < duration_s:
            kind, text = next(texts)
            res = await send(client, target, kind, text, t0, scheduled_s=time.perf_counter() - t0)
            results.append(res)
            if on_done:
                on_done(res)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = _wall(results, t0, duration_s)
    sampler.cancel()
    after = await scrape(client, target.url)
    return StageRun(None, duration_s, results, wall, before, after, [*samples, after], concurrency)


def _wall(results: Sequence[RequestResult], t0: float, duration_s: float) -> float:
    """Stage wall time: from the start to the last answer (at least the stage duration)."""
    finished = [r.finished_s for r in results if r.finished_s is not None]
    return max([duration_s, *finished]) if finished else time.perf_counter() - t0


def stage_report(run: StageRun) -> dict[str, Any]:
    """The JSON record of one stage (see bench/README.md for the schema)."""
    results = run.results
    ok = [r for r in results if r.ok]
    errors: dict[str, int] = {}
    for r in results:
        if not r.ok:
            errors[str(r.status)] = errors.get(str(r.status), 0) + 1
    audio = sum(r.audio_s for r in ok)
    throughput = audio / run.wall_s if run.wall_s > 0 else 0.0
    by_kind: dict[str, Any] = {}
    for kind in sorted({r.kind for r in results}):
        mine = [r for r in results if r.kind == kind]
        mine_ok = [r for r in mine if r.ok]
        by_kind[kind] = {
            "sent": len(mine),
            "ok": len(mine_ok),
            "latency_s": stats.summarize(r.latency_s for r in mine_ok if r.latency_s is not None),
            "ttfa_s": stats.summarize(r.ttfa_s for r in mine_ok if r.ttfa_s is not None),
            "audio_s": stats.summarize(r.audio_s for r in mine_ok),
            "chars_mean": sum(r.chars for r in mine) / len(mine),
        }
    mean_audio = (audio / len(ok)) if ok else None
    return {
        "offered_rate_rps": run.offered_rate_rps,
        "concurrency": run.concurrency,
        "duration_s": run.duration_s,
        "wall_s": run.wall_s,
        "requests": {"sent": len(results), "ok": len(ok), "errors": errors},
        "error_rate": (len(results) - len(ok)) / len(results) if results else 0.0,
        "audio_s_total": audio,
        "throughput_audio_s_per_s": throughput,
        "throughput_rps": len(ok) / run.wall_s if run.wall_s > 0 else 0.0,
        "offered_audio_s_per_s": (run.offered_rate_rps * mean_audio)
        if run.offered_rate_rps is not None and mean_audio is not None else None,
        "rtf": (run.wall_s / audio) if audio > 0 else None,
        "rtf_per_request": stats.summarize(
            r.latency_s / r.audio_s for r in ok if r.latency_s is not None and r.audio_s > 0
        ),
        "latency_s": stats.summarize(r.latency_s for r in ok if r.latency_s is not None),
        "ttfa_s": stats.summarize(r.ttfa_s for r in ok if r.ttfa_s is not None),
        "audio_s_per_request": stats.summarize(r.audio_s for r in ok),
        "by_kind": by_kind,
        "server": metrics.server_report(run.metrics_before, run.metrics_after, run.metrics_samples),
    }


def results_as_dicts(results: Sequence[RequestResult]) -> list[dict[str, Any]]:
    return [asdict(r) for r in results]
