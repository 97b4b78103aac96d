"""Two real server processes sharing one real redis-server: shared jobs, cache, rate limits,
Redis restarts and outages, and a killed replica whose job another one resumes.

The pair runs the 3-speaker tiny model with batch size 1 (so a segment's audio depends only
on its seed and voice, whichever replica renders it). Every test uses its own API key: the
pair enforces a rate limit, and buckets are per key.
"""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from jobs_support import finished, poll, sentences, submit, wav_seconds
from redis_support import RedisServer, redis_server  # noqa: F401  (fixture)
from same_render import assert_same_render
from server_process import ServerProcess, start_server

RATE, BURST = 0.1, 5


@pytest.fixture(scope="module")
def pair(
    tiny_multispeaker_dir: str,
    tmp_path_factory: pytest.TempPathFactory,
    redis_server: RedisServer,  # noqa: F811
) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    logs = tmp_path_factory.mktemp("pair-logs")
    args = (
        "--no-autotune", "--max-batch-size", "1", "--redis-url", redis_server.url,
        "--job-heartbeat-s", "0.5", "--job-chunk-segments", "4",
        "--rate-limit-rps", str(RATE), "--rate-limit-burst", str(BURST),
    )  # fmt: skip
    with ThreadPoolExecutor(2) as pool:
        a, b = pool.map(lambda _: start_server(tiny_multispeaker_dir, logs, *args), range(2))
    yield a, b
    for server in (a, b):
        server.stop()


@pytest.fixture
def clients(pair: tuple[ServerProcess, ServerProcess]) -> Iterator[tuple[httpx.Client, ...]]:
    headers = {"Authorization": f"Bearer test-{uuid.uuid4().hex}"}
    with (
        httpx.Client(base_url=pair[0].url, timeout=60, headers=headers) as a,
        httpx.Client(base_url=pair[1].url, timeout=60, headers=headers) as b,
    ):
        yield a, b


def metric(client: httpx.Client, name: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no metric {name}")


def wait_for(check: Any, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.1)


def test_job_accepted_on_one_replica_is_served_by_the_other(
    clients: Any,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    a, b = clients
    job = submit(a, input=sentences(24), seed=11)
    running = poll(b, job["id"], lambda j: j["chunks_done"] >= 1)
    assert running["status"] in ("running", "succeeded")
    from_b = b.get(running["chunks"][0]["url"])
    assert from_b.status_code == 200
    # --job-storage redis (the default with --redis-url): chunks are FLAC in Redis.
    stored = redis_server.client().get(f"voicefleet:job:{job['id']}:audio:0")
    assert stored is not None and stored[:4] == b"fLaC"
    done = finished(b, job["id"])
    assert done["status"] == "succeeded", done
    whole_b = b.get(done["audio_url"]).content
    assert whole_b == a.get(done["audio_url"]).content
    assert from_b.content == a.get(done["chunks"][0]["url"]).content
    assert wav_seconds(whole_b) > done["audio_seconds"]


def test_dialogue_turns_are_rendered_with_their_voices(clients: Any) -> None:
    a, b = clients
    script = "Speaker 1: Good morning.\nSpeaker 2: Good morning to you."
    mapped = submit(a, input=script, seed=3, voices={"Speaker 1": "alloy", "Speaker 2": "fable"})
    same = submit(b, input=script, seed=3, voices={"Speaker 1": "alloy", "Speaker 2": "alloy"})
    chunks = []
    for job in (mapped, same):
        done = finished(a, job["id"])
        assert done["status"] == "succeeded" and done["chunks_total"] == 2
        chunks.append([a.get(c["url"]).content for c in done["chunks"]])
    assert_same_render(chunks[0][0], chunks[1][0])  # Speaker 1: same voice, same seed
    with pytest.raises(AssertionError):  # Speaker 2: another voice
        assert_same_render(chunks[0][1], chunks[1][1])


def test_result_cache_is_shared_and_counted(clients: Any) -> None:
    a, b = clients
    body = {"model": "tts-1", "voice": "alloy", "input": "Cached words.", "response_format": "wav"}
    hits, misses = (
        metric(b, "voicefleet_cache_hits_total"),
        metric(a, "voicefleet_cache_misses_total"),
    )
    first = a.post("/v1/audio/speech", json=body | {"seed": 99})
    second = b.post("/v1/audio/speech", json=body | {"seed": 99})
    assert first.status_code == second.status_code == 200
    assert first.content == second.content
    assert metric(a, "voicefleet_cache_misses_total") == misses + 1
    assert metric(b, "voicefleet_cache_hits_total") == hits + 1
    # Unseeded requests ask for fresh noise: not cached by default.
    b.post("/v1/audio/speech", json=body)
    assert metric(b, "voicefleet_cache_hits_total") == hits + 1


def test_rate_limit_is_shared_across_replicas(clients: Any) -> None:
    a, b = clients
    body = {"model": "tts-1", "voice": "alloy", "input": "Hi.", "response_format": "pcm"}
    statuses = [(a if i % 2 else b).post("/v1/audio/speech", json=body) for i in range(BURST)]
    assert [r.status_code for r in statuses] == [200] * BURST
    for client in (a, b):
        limited = client.post("/v1/audio/speech", json=body)
        assert limited.status_code == 429, limited.text
        assert limited.json()["error"]["code"] == "rate_limit_exceeded"
        assert int(limited.headers["Retry-After"]) >= 1
        assert client.post("/v1/audio/jobs", json={"input": "Hi."}).status_code == 429
    # Another key has its own bucket; reads are never limited.
    other = {"Authorization": "Bearer someone-else"}
    assert a.post("/v1/audio/speech", json=body, headers=other).status_code == 200
    assert a.get("/v1/models").status_code == 200


def test_redis_restart_mid_job_loses_nothing(clients: Any, redis_server: RedisServer) -> None:  # noqa: F811
    a, b = clients
    job = submit(a, input=sentences(48), seed=5)
    poll(a, job["id"], lambda j: j["chunks_done"] >= 2)
    redis_server.restart(down_for_s=1.0)  # no persistence: Redis comes back empty
    done = finished(a, job["id"])
    assert done["status"] == "succeeded", done
    assert done["chunks_done"] == done["chunks_total"]
    # Everything is back in Redis: the other replica serves the whole result.
    wait_for(lambda: b.get(f"/v1/audio/jobs/{job['id']}").status_code == 200)
    whole = b.get(done["audio_url"])
    assert whole.status_code == 200
    assert abs(wav_seconds(whole.content) - wav_seconds(a.get(done["audio_url"]).content)) < 1e-9


def test_redis_down_degrades_and_recovers(clients: Any, redis_server: RedisServer) -> None:  # noqa: F811
    a, b = clients
    redis_server.stop()
    try:
        wait_for(lambda: a.get("/readyz").json()["redis"]["up"] is False)
        ready = a.get("/readyz")
        assert ready.status_code == 200 and "degraded" in ready.json()["redis"]["mode"]
        assert metric(a, "voicefleet_redis_up") == 0
        speech = a.post(
            "/v1/audio/speech",
            json={"model": "tts-1", "voice": "alloy", "input": "No Redis.", "seed": 1},
        )
        assert speech.status_code == 200
        job = submit(a, input=sentences(4))  # kept in-process while Redis is away
        assert finished(a, job["id"])["status"] == "succeeded"
    finally:
        redis_server.start()
    wait_for(lambda: a.get("/readyz").json()["redis"]["up"] is True)
    wait_for(lambda: metric(b, "voicefleet_redis_up") == 1)
    assert a.get(f"/v1/audio/jobs/{job['id']}").json()["status"] == "succeeded"


def test_a_killed_owner_s_job_is_resumed_by_the_other_replica(
    clients: Any, pair: tuple[ServerProcess, ServerProcess]
) -> None:
    a, b = clients
    reference = submit(b, input=sentences(40), seed=21)
    job = submit(a, input=sentences(40), seed=21)
    poll(b, job["id"], lambda j: j["chunks_done"] >= 2)
    pair[0].terminate(signal.SIGKILL)
    pair[0].process.wait(10)
    done = finished(b, job["id"], timeout=60)
    assert done["status"] == "succeeded", done
    assert done["resumes"] == 1
    # Same seed, same audio: the resumed job equals one rendered without interruption.
    expected = finished(b, reference["id"])
    assert_same_render(b.get(done["audio_url"]).content, b.get(expected["audio_url"]).content)
