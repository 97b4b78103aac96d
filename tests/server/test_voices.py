"""Voices from reference audio, end to end through real servers on the tiny SpeechT5 family.

Two replicas share one real redis-server (upload on one, speak on the other); the suite's
VITS server refuses uploads. The replicas batch (window 300 ms) with the result cache off, so the
mixed-voice test really puts several uploaded voices in one model call.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile
from jobs_support import finished, submit
from redis_support import RedisServer, redis_server  # noqa: F401  (fixture)
from same_render import assert_same_samples
from server_process import ServerProcess, start_server

RATE = 22050  # uploads are resampled to the encoder's 16 kHz


def clip(kind: str, seconds: float = 2.0, rate: int = RATE, fmt: str = "WAV") -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    if kind == "hum":
        wave = 0.5 * np.sin(2 * np.pi * 110 * t)
    elif kind == "whistle":
        wave = 0.3 * np.sin(2 * np.pi * 3000 * t) * np.sin(2 * np.pi * 3 * t)
    elif kind == "noise":
        wave = 0.2 * np.random.default_rng(3).standard_normal(len(t))
    else:
        wave = np.zeros_like(t)
    out = io.BytesIO()
    # Integer samples: every lossless format then holds exactly the same audio.
    soundfile.write(out, (wave * 32767).astype(np.int16), rate, format=fmt, subtype="PCM_16")
    return out.getvalue()


@pytest.fixture(scope="module")
def family_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from voicefleet_server.tiny_model import make_tiny_speecht5

    return make_tiny_speecht5(tmp_path_factory.mktemp("tiny-speecht5")).parent


@pytest.fixture(scope="module")
def servers(
    family_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
    redis_server: RedisServer,  # noqa: F811
) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    logs = tmp_path_factory.mktemp("voice-logs")
    args = (
        "--vocoder", str(family_dir / "vocoder"),
        "--speaker-encoder", str(family_dir / "speaker-encoder"),
        "--no-autotune", "--max-batch-size", "8", "--batch-window-ms", "300",
        "--cache", "off", "--dtype", "float32", "--redis-url", redis_server.url,
        "--redis-prefix", f"voices-{uuid.uuid4().hex[:6]}:",
    )  # fmt: skip
    model = str(family_dir / "model")
    with ThreadPoolExecutor(2) as pool:
        a, b = pool.map(lambda _: start_server(model, logs, *args), range(2))
    yield a, b
    for server in (a, b):
        server.stop()


@pytest.fixture(scope="module")
def clients(
    servers: tuple[ServerProcess, ServerProcess],
) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    with (
        httpx.Client(base_url=servers[0].url, timeout=60) as a,
        httpx.Client(base_url=servers[1].url, timeout=60) as b,
    ):
        yield a, b


def upload(
    client: httpx.Client, data: bytes, name: str = "me", filename: str = "clip.wav"
) -> httpx.Response:
    return client.post("/v1/audio/voices", data={"name": name}, files={"file": (filename, data)})


def metric(client: httpx.Client, name: str) -> float:
    total = 0.0
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def speak(client: httpx.Client, voice: str, text: str = "Hello there.", seed: int = 5) -> Any:
    response = client.post(
        "/v1/audio/speech",
        json={
            "model": "tts-1",
            "input": text,
            "voice": voice,
            "response_format": "wav",
            "seed": seed,
        },
    )
    assert response.status_code == 200, response.text
    audio, _ = soundfile.read(io.BytesIO(response.content), dtype="float32")
    return audio


@pytest.fixture(scope="module")
def voices(clients: tuple[httpx.Client, ...]) -> dict[str, str]:
    """Three voices uploaded on replica A."""
    a = clients[0]
    made = {}
    for kind in ("hum", "whistle", "noise"):
        response = upload(a, clip(kind), name=kind)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["id"].startswith("voice_") and body["name"] == kind
        assert abs(body["duration"] - 2.0) < 0.01
        made[kind] = body["id"]
    return made


def test_upload_then_speak_and_list(clients: Any, voices: dict[str, str]) -> None:
    a, b = clients
    audio = speak(a, voices["hum"])
    assert len(audio) > 0 and float(np.abs(audio).max()) > 0
    listed = {v["id"]: v for v in a.get("/v1/audio/voices").json()["data"]}
    assert {"default", "alt", *voices.values()} <= set(listed)
    assert listed[voices["hum"]]["type"] == "uploaded"
    assert listed["default"]["type"] == "builtin"
    # Built-in voices and OpenAI names still work.
    assert len(speak(b, "alloy")) > 0


def test_same_clip_twice_runs_the_encoder_once(clients: Any, voices: dict[str, str]) -> None:
    a, b = clients
    data = clip("hum", seconds=1.5)
    misses = metric(a, "voicefleet_voice_embedding_cache_misses_total") + metric(
        b, "voicefleet_voice_embedding_cache_misses_total"
    )
    encoder_runs = metric(a, "voicefleet_speaker_encoder_seconds_count")
    first = upload(a, data, name="again").json()
    second = upload(a, data, name="again").json()
    # The same audio re-encoded losslessly (flac) is the same voice; so on another replica.
    third = upload(b, clip("hum", seconds=1.5, fmt="FLAC"), filename="c.flac").json()
    assert first["id"] == second["id"] == third["id"]
    assert metric(a, "voicefleet_speaker_encoder_seconds_count") == encoder_runs + 1
    after = metric(a, "voicefleet_voice_embedding_cache_misses_total") + metric(
        b, "voicefleet_voice_embedding_cache_misses_total"
    )
    assert after == misses + 1
    assert metric(a, "voicefleet_voice_embedding_cache_hits_total") >= 1
    assert a.delete(f"/v1/audio/voices/{first['id']}").status_code == 200


def test_upload_on_one_replica_speak_on_the_other(clients: Any) -> None:
    a, b = clients
    voice = upload(a, clip("noise", seconds=3.0), name="shared").json()["id"]
    assert_same_samples(speak(b, voice), speak(a, voice))  # same embedding, same seed
    assert voice in {v["id"] for v in b.get("/v1/audio/voices").json()["data"]}
    assert b.delete(f"/v1/audio/voices/{voice}").status_code == 200
    refused = b.post(
        "/v1/audio/speech",
        json={"model": "tts-1", "input": "Hi.", "voice": voice, "response_format": "wav"},
    )
    assert refused.status_code == 400 and "no uploaded voice" in refused.text
    assert a.delete(f"/v1/audio/voices/{voice}").status_code == 404


def test_a_batch_of_uploaded_voices_gives_each_its_own(
    clients: Any, voices: dict[str, str]
) -> None:
    a = clients[0]
    ids = list(voices.values())
    sizes_before = metric(a, "voicefleet_batch_size_count")
    with ThreadPoolExecutor(3) as pool:
        mixed = list(pool.map(lambda v: speak(a, v), ids))
        shared = list(pool.map(lambda _: speak(a, ids[0]), ids))
    # Six requests in (at most) a few model calls: they were batched.
    assert metric(a, "voicefleet_batch_size_count") - sizes_before < 6
    assert_same_samples(mixed[0], shared[0])
    for i in (1, 2):
        assert mixed[i].shape == shared[i].shape
        peak = float(np.abs(shared[i]).max())
        assert float(np.abs(mixed[i] - shared[i]).max()) > 0.05 * peak
    # Seeded items render the same batched or alone (PCM16: within a step or two).
    for voice, batched in zip(ids, mixed, strict=True):
        assert float(np.abs(speak(a, voice) - batched).max()) <= 2 / 32768


def test_dialogue_job_with_two_uploaded_voices(clients: Any, voices: dict[str, str]) -> None:
    b = clients[1]
    script = "Speaker 1: Good morning.\nSpeaker 2: Good morning to you."
    job = submit(
        b,
        model="tts-1",
        input=script,
        seed=3,
        voices={"Speaker 1": voices["hum"], "Speaker 2": voices["whistle"]},
    )
    done = finished(b, job["id"])
    assert done["status"] == "succeeded" and done["chunks_total"] == 2
    unknown = b.post(
        "/v1/audio/jobs",
        json={"input": script, "voices": {"Speaker 1": "voice_000000000000000000000000"}},
    )
    assert unknown.status_code == 400 and unknown.json()["error"]["param"] == "voices.Speaker 1"


@pytest.mark.parametrize(
    ("data", "filename", "status", "message"),
    [
        (b"just some text, not audio\n" * 10, "notes.wav", 422, "not readable audio"),
        (b"", "empty.wav", 422, "empty"),
        (clip("hum", seconds=31, rate=8000), "long.wav", 422, "the limit is 30 s"),
        (clip("silence"), "quiet.wav", 422, "silent"),
        (clip("hum", seconds=0.2), "short.wav", 422, "at least"),
        (bytes(11_000_000), "big.wav", 413, "exceeds"),
    ],
    ids=["text-as-wav", "empty", "31s", "silence", "too-short", "11MB"],
)
def test_bad_uploads_are_refused(
    clients: Any, data: bytes, filename: str, status: int, message: str
) -> None:
    response = upload(clients[0], data, filename=filename)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]["message"]


def test_a_vits_pod_cannot_clone(client: httpx.Client, voices: dict[str, str]) -> None:
    vits = client  # the suite's shared server on the tiny VITS model
    response = upload(vits, clip("hum"))
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "voice_cloning_unsupported"
    assert "cannot clone voices" in response.json()["error"]["message"]
    refused = vits.post(
        "/v1/audio/speech",
        json={"model": "tts-1", "input": "Hi.", "voice": voices["hum"], "response_format": "wav"},
    )
    assert refused.status_code == 400 and "cannot use uploaded voices" in refused.text
    assert all(v["type"] == "builtin" for v in vits.get("/v1/audio/voices").json()["data"])
