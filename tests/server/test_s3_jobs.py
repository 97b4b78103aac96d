"""Jobs with their audio in S3: two real server processes, one real redis-server (records
and progress) and moto's standalone S3 server (chunks and results), reached through boto3's
standard environment. Downloads use plain urllib on the presigned URLs, as a client would.

Batch size 1, so a chunk's audio depends only on its seed and voice, whichever replica
renders it. The two destructive tests (storage outage, killed replica) come last.
"""

from __future__ import annotations

import io
import signal
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile as sf
from jobs_support import finished, poll, sentences, submit
from redis_support import RedisServer, redis_server  # noqa: F401  (fixture)
from s3_support import BUCKET, MotoServer, moto_server  # noqa: F401  (fixture)
from same_render import assert_same_render
from server_process import ServerProcess, start_server

PREFIX = "jobs/"
RETRY_S = 2.0


@pytest.fixture(scope="module")
def pair(
    tiny_multispeaker_dir: str,
    tmp_path_factory: pytest.TempPathFactory,
    redis_server: RedisServer,  # noqa: F811
    moto_server: MotoServer,  # noqa: F811
) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    logs = tmp_path_factory.mktemp("s3-pair-logs")
    args = (
        "--no-autotune", "--max-batch-size", "1", "--redis-url", redis_server.url,
        "--job-storage", f"s3://{BUCKET}/{PREFIX}", "--job-url-ttl", "10m",
        "--job-storage-retry-s", str(RETRY_S), "--job-heartbeat-s", "0.5",
        "--job-chunk-segments", "4",
    )  # fmt: skip
    a = start_server(tiny_multispeaker_dir, logs, *args, env=moto_server.env())
    b = start_server(tiny_multispeaker_dir, logs, *args, env=moto_server.env())
    yield a, b
    for server in (a, b):
        server.stop()


@pytest.fixture
def clients(pair: tuple[ServerProcess, ServerProcess]) -> Iterator[tuple[httpx.Client, ...]]:
    with (
        httpx.Client(base_url=pair[0].url, timeout=60) as a,
        httpx.Client(base_url=pair[1].url, timeout=60) as b,
    ):
        yield a, b


def wait_for(check: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not reached in {timeout} s: {what}")
        time.sleep(0.1)


def download(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return bytes(response.read())


def samples_of(data: bytes) -> np.ndarray:
    audio, _ = sf.read(io.BytesIO(data), dtype="int16")
    return np.asarray(audio)


def test_chunks_and_the_whole_result_come_from_storage(
    clients: Any,
    moto_server: MotoServer,  # noqa: F811
    redis_server: RedisServer,  # noqa: F811
) -> None:
    a, b = clients
    job = submit(a, input=sentences(12), seed=11)
    running = poll(b, job["id"], lambda j: j["chunks_done"] >= 1)  # the other replica
    first = running["chunks"][0]
    assert first["url"].startswith(f"{moto_server.endpoint}/{BUCKET}/{PREFIX}{job['id']}/")
    assert first["format"] == "flac" and "X-Amz-Signature=" in first["url"]
    assert time.time() + 500 < first["expires_at"] < time.time() + 700  # --job-url-ttl 10m
    stored = samples_of(download(first["url"]))
    assert abs(len(stored) - first["seconds"] * 16000) <= 8  # seconds has 3 decimals
    # The pod's own chunk route serves the same samples in the job's format.
    via_pod = b.get(f"/v1/audio/jobs/{job['id']}/chunks/0")
    assert via_pod.headers["content-type"] == "audio/wav"
    assert np.array_equal(samples_of(via_pod.content), stored)

    done = finished(b, job["id"])
    assert done["status"] == "succeeded", done
    keys = moto_server.keys(f"{PREFIX}{job['id']}/")
    assert len(keys) == done["chunks_total"] + 1 and keys[0].endswith("/audio.wav")
    # Records and progress are in Redis; not one byte of audio.
    r = redis_server.client()
    assert r.exists(f"voicefleet:job:{job['id']}")
    assert list(r.scan_iter(match=f"voicefleet:job:{job['id']}:audio:*")) == []

    redirect = b.get(done["audio_url"], follow_redirects=False)
    assert redirect.status_code == 307
    location = redirect.headers["location"]
    assert location.startswith(f"{moto_server.endpoint}/{BUCKET}/{PREFIX}{job['id']}/audio.wav?")
    whole = samples_of(download(location))
    # The whole result is the chunks joined with the 80 ms segment pause.
    pause = np.zeros(int(0.08 * 16000), dtype=np.int16)
    parts: list[np.ndarray] = []
    for chunk in done["chunks"]:
        parts += [pause] if parts else []
        parts.append(samples_of(download(chunk["url"])))
    assert np.array_equal(whole, np.concatenate(parts))


def test_delete_removes_the_job_s_objects(clients: Any, moto_server: MotoServer) -> None:  # noqa: F811
    a, b = clients
    done = finished(a, submit(a, input=sentences(6))["id"])
    prefix = f"{PREFIX}{done['id']}/"
    assert moto_server.keys(prefix)
    deleted = b.delete(f"/v1/audio/jobs/{done['id']}").json()  # from the other replica
    assert deleted["status"] == "succeeded" and deleted["deleted"] is True
    assert moto_server.keys(prefix) == []
    assert a.get(f"/v1/audio/jobs/{done['id']}").json()["deleted"] is True
    assert a.get(done["audio_url"], follow_redirects=False).status_code == 404

    # A job still rendering on A, deleted through B: A stops and removes what it wrote since.
    job = submit(a, input=sentences(80))
    poll(b, job["id"], lambda j: j["chunks_done"] >= 1)
    assert b.delete(f"/v1/audio/jobs/{job['id']}").status_code == 200
    stopped = finished(a, job["id"])
    assert stopped["status"] == "cancelled" and stopped["chunks_done"] == 0
    wait_for(lambda: moto_server.keys(f"{PREFIX}{job['id']}/") == [], "the objects are gone")


def test_storage_outage_mid_job_fails_it_visibly(clients: Any, moto_server: MotoServer) -> None:  # noqa: F811
    a, b = clients
    job = submit(a, input=sentences(200))
    poll(a, job["id"], lambda j: j["chunks_done"] >= 1)
    moto_server.stop()
    try:
        stopped_at = time.monotonic()
        failed = finished(b, job["id"], timeout=60)  # never hangs
        assert failed["status"] == "failed", failed
        assert failed["error"]["code"] == "storage_unavailable"
        assert "unreachable" in failed["error"]["message"]
        assert time.monotonic() - stopped_at < 30
        # The pod still answers: status from Redis, readiness with the storage's state.
        ready = a.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["jobs"]["storage"]["up"] is False
        chunk = a.get(f"/v1/audio/jobs/{job['id']}/chunks/0")
        assert chunk.status_code == 503 and chunk.headers["Retry-After"]
        assert chunk.json()["error"]["code"] == "storage_unavailable"
    finally:
        moto_server.start()  # moto comes back empty: the bucket is created again
    after = finished(a, submit(a, input=sentences(4))["id"])
    assert after["status"] == "succeeded", after
    assert a.get("/readyz").json()["jobs"]["storage"]["up"] is True


def test_a_killed_replica_s_job_resumes_rendering_only_missing_chunks(
    clients: Any,
    pair: tuple[ServerProcess, ServerProcess],
    moto_server: MotoServer,  # noqa: F811
) -> None:
    a, b = clients
    s3 = moto_server.client()
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    text = sentences(40)
    reference = finished(b, submit(b, input=text, seed=21)["id"])
    job = submit(a, input=text, seed=21)
    seen = poll(b, job["id"], lambda j: j["chunks_done"] >= 2)
    pair[0].terminate(signal.SIGKILL)
    pair[0].process.wait(10)
    done = finished(b, job["id"], timeout=90)
    assert done["status"] == "succeeded", done
    assert done["resumes"] == 1 and done["chunks_done"] == done["chunks_total"]
    # Chunks A had finished were not rendered again: each has one version only.
    for chunk in seen["chunks"]:
        key = f"{PREFIX}{job['id']}/chunk-{chunk['index']:05d}.flac"
        versions = s3.list_object_versions(Bucket=BUCKET, Prefix=key).get("Versions", [])
        assert len(versions) == 1, (key, versions)
    # Same seed, same audio: equal to the job rendered without interruption.
    whole = download(b.get(done["audio_url"], follow_redirects=False).headers["location"])
    expected = download(b.get(reference["audio_url"], follow_redirects=False).headers["location"])
    assert_same_render(whole, expected)
