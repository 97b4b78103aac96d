"""The load generator against an in-process fake server (httpx.MockTransport): timing,
audio measurement, streaming and SSE, error accounting, and the stage report."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from voicefleet_bench import load

RATE = 16000
METRICS = """\
# TYPE voicefleet_batch_size histogram
voicefleet_batch_size_bucket{le="1.0"} %(b1)d
voicefleet_batch_size_bucket{le="2.0"} %(b2)d
voicefleet_batch_size_bucket{le="+Inf"} %(b2)d
voicefleet_batch_size_count %(b2)d
voicefleet_batch_size_sum %(sum)d
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 1048576
"""


class FakeServer:
    """Answers speech with 0.5 s of PCM per request (in 2 chunks when streamed), 429 for
    inputs containing "overload", and counts calls into its /metrics."""

    def __init__(self) -> None:
        self.calls = 0

    async def handler(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/metrics":
            text = METRICS % {"b1": self.calls, "b2": 2 * self.calls, "sum": 3 * self.calls}
            return httpx.Response(200, text=text)
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": "fake-vits"}]})
        if request.url.path == "/v1/audio/voices":
            return httpx.Response(200, json={"data": [{"id": "v0"}]})
        body = json.loads(request.content)
        if "overload" in body["input"]:
            return httpx.Response(429, headers={"Retry-After": "1"}, json={"error": {}})
        self.calls += 1
        pcm = b"\0\0" * (RATE // 2)
        if body.get("response_format") == "wav":
            import io
            import wave

            buf = io.BytesIO()
            with wave.open(buf, "wb") as w:
                w.setnchannels(1)
                w.setsampwidth(2)
                w.setframerate(RATE)
                w.writeframes(pcm)
            return httpx.Response(200, content=buf.getvalue())
        if body.get("stream_format") == "sse":
            half = len(pcm) // 2
            events = [{"type": "speech.audio.delta", "audio": base64.b64encode(part).decode()}
                      for part in (pcm[:half], pcm[half:])]
            events.append({"type": "speech.audio.done"})
            sse = "".join(f"data: {json.dumps(e)}\n\n" for e in events)
            return httpx.Response(200, content=sse.encode())
        if body.get("stream_format") == "audio":
            async def chunks() -> AsyncIterator[bytes]:
                yield pcm[: len(pcm) // 2]
                await asyncio.sleep(0.01)
                yield pcm[len(pcm) // 2 :]
            return httpx.Response(200, content=chunks())
        return httpx.Response(200, content=pcm)


@pytest.fixture
def fake() -> FakeServer:
    return FakeServer()


def _client(fake: FakeServer) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(fake.handler))


async def test_discover_reads_model_voice_and_rate(fake: FakeServer) -> None:
    async with _client(fake) as client:
        target = await load.discover(client, "http://fake", load.Target("http://fake"))
    assert (target.model, target.voice, target.sample_rate) == ("fake-vits", "v0", RATE)


@pytest.mark.parametrize("stream_format", [None, "audio", "sse"])
async def test_send_measures_audio_and_first_byte(
    fake: FakeServer, stream_format: str | None
) -> None:
    target = load.Target("http://fake", stream_format=stream_format)
    async with _client(fake) as client:
        res = await load.send(client, target, "short", "Hello there.", t0=0.0)
    assert res.ok
    assert res.audio_s == pytest.approx(0.5)
    assert res.latency_s is not None and res.ttfa_s is not None
    assert 0 <= res.ttfa_s <= res.latency_s


async def test_open_loop_counts_errors_and_reports_server_metrics(fake: FakeServer) -> None:
    arrivals = [load.Arrival(0.01 * i, "short", "overload" if i == 3 else f"Text {i}.")
                for i in range(6)]
    done: list[load.RequestResult] = []
    async with _client(fake) as client:
        run = await load.run_open_loop(
            client, load.Target("http://fake"), arrivals, offered_rate_rps=100.0,
            duration_s=0.06, metrics_interval_s=0.01, on_done=done.append,
        )
    assert len(done) == 6
    report = load.stage_report(run)
    assert report["requests"] == {"sent": 6, "ok": 5, "errors": {"429": 1}}
    assert report["error_rate"] == pytest.approx(1 / 6)
    assert report["audio_s_total"] == pytest.approx(2.5)
    assert report["throughput_audio_s_per_s"] == pytest.approx(2.5 / run.wall_s)
    assert report["rtf"] == pytest.approx(run.wall_s / 2.5)
    assert report["by_kind"]["short"]["ok"] == 5
    assert report["server"]["batch_size"]["count"] == 10  # 2 per call, 5 calls in this stage
    assert report["server"]["batch_size"]["mean"] == pytest.approx(1.5)
    assert report["server"]["peak"]["rss_bytes"] == 1048576
    assert report["offered_audio_s_per_s"] == pytest.approx(50.0)


async def test_closed_loop_keeps_n_in_flight_for_the_window(fake: FakeServer) -> None:
    def forever() -> Iterator[tuple[str, str]]:
        while True:
            yield "short", "Again."
    async with _client(fake) as client:
        run = await load.run_closed_loop(
            client, load.Target("http://fake"), forever(), concurrency=3, duration_s=0.05,
            metrics_interval_s=0.01,
        )
    report = load.stage_report(run)
    assert report["concurrency"] == 3
    assert report["requests"]["ok"] >= 3
    assert report["requests"]["errors"] == {}


async def test_unreachable_server_is_an_error_not_an_exception() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(refuse)) as client:
        res = await load.send(client, load.Target("http://nowhere"), "short", "Hi.", t0=0.0)
    assert not res.ok
    assert res.status == "error: ConnectError"
