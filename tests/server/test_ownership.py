"""Voices and jobs per API key, end to end: two keys and an admin key, two replicas of the
tiny SpeechT5 family on one real redis-server, through the official `openai` client where
it has the call.

What a key may not see answers exactly as what does not exist (404 / voice_not_found), on
either replica; built-in voices are everyone's; the admin key sees and manages all; Redis
holds key ids (hashes), never a key.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import openai
import pytest
import soundfile
from jobs_support import finished
from redis_support import RedisServer, redis_server  # noqa: F401  (fixture)
from server_process import ServerProcess, start_server

KEY_A = "vf-owner-alice-0123456789abcdef"
KEY_B = "vf-owner-bob-fedcba9876543210"
ADMIN = "vf-owner-admin-5555555555555555"


def clip(seconds: float = 1.5, hz: float = 180.0) -> bytes:
    rate = 22050
    t = np.arange(int(seconds * rate)) / rate
    out = io.BytesIO()
    soundfile.write(out, (0.4 * np.sin(2 * np.pi * hz * t) * 32767).astype(np.int16), rate,
                    format="WAV", subtype="PCM_16")  # fmt: skip
    return out.getvalue()


@pytest.fixture(scope="module")
def replicas(
    tmp_path_factory: pytest.TempPathFactory,
    redis_server: RedisServer,  # noqa: F811
) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    from voicefleet_server.tiny_model import make_tiny_speecht5

    family = make_tiny_speecht5(tmp_path_factory.mktemp("owners-speecht5")).parent
    logs = tmp_path_factory.mktemp("owners-logs")
    args = (
        "--vocoder", str(family / "vocoder"), "--speaker-encoder", str(family / "speaker-encoder"),
        "--no-autotune", "--max-batch-size", "4", "--dtype", "float32", "--cache", "off",
        "--api-key", f"{KEY_A},{KEY_B}", "--admin-api-key", ADMIN,
        "--redis-url", redis_server.url, "--redis-prefix", f"owners-{uuid.uuid4().hex[:6]}:",
    )  # fmt: skip
    with ThreadPoolExecutor(2) as pool:
        one, two = pool.map(lambda _: start_server(str(family / "model"), logs, *args), range(2))
    yield one, two
    for server in (one, two):
        server.stop()


def http(server: ServerProcess, key: str) -> httpx.Client:
    return httpx.Client(
        base_url=server.url, timeout=60, headers={"Authorization": f"Bearer {key}"}
    )


def sdk(server: ServerProcess, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0)


def listed(client: httpx.Client) -> set[str]:
    response = client.get("/v1/audio/voices")
    assert response.status_code == 200, response.text
    return {v["id"] for v in response.json()["data"] if v["type"] == "uploaded"}


def speak(client: httpx.Client, voice: object) -> httpx.Response:
    return client.post(
        "/v1/audio/speech",
        json={"model": "tts-1", "input": "Hello there.", "voice": voice,
              "response_format": "wav", "seed": 1},
    )  # fmt: skip


def test_a_voice_belongs_to_the_key_that_uploaded_it(
    replicas: tuple[ServerProcess, ServerProcess], redis_server: RedisServer  # noqa: F811
) -> None:
    one, two = replicas
    # Alice uploads through the OpenAI SDK on replica one (audio_sample, name, consent).
    made = sdk(one, KEY_A).audio.voices.create(
        audio_sample=("alice.wav", clip(), "audio/wav"), name="alice", consent="cons_alice"
    )
    voice = made.id
    assert voice.startswith("voice_") and made.name == "alice"
    with http(one, KEY_A) as a1, http(two, KEY_A) as a2, http(two, KEY_B) as b2, \
            http(one, ADMIN) as admin:  # fmt: skip
        assert voice in listed(a1) and voice in listed(a2)
        assert voice not in listed(b2)
        assert voice in listed(admin)
        # Alice speaks with it on either replica, as a string or as OpenAI's object.
        assert speak(a2, voice).status_code == 200
        assert speak(a2, {"id": voice}).status_code == 200
        # To Bob it does not exist: the same answer as an id nobody made.
        stranger = speak(b2, voice)
        nobody = speak(b2, "voice_" + "0" * 24)
        assert stranger.status_code == nobody.status_code == 400
        assert stranger.json()["error"]["code"] == nobody.json()["error"]["code"]
        assert stranger.json()["error"]["code"] == "voice_not_found"
        assert b2.delete(f"/v1/audio/voices/{voice}").status_code == 404
        # Built-in voices are everyone's.
        assert speak(b2, "alloy").status_code == 200
        # Bob uploading the same clip gets a voice of his own, not Alice's.
        bobs = b2.post(
            "/v1/audio/voices",
            data={"name": "bob"},
            files={"audio_sample": ("bob.wav", clip())},
        )
        assert bobs.status_code == 200, bobs.text
        assert bobs.json()["id"] != voice
        assert listed(b2) == {bobs.json()["id"]}
        # The admin sees both and may delete Alice's.
        assert {voice, bobs.json()["id"]} <= listed(admin)
        assert admin.delete(f"/v1/audio/voices/{voice}").status_code == 200
        assert speak(a1, voice).status_code == 400
    # Redis holds key ids, never a key.
    store = redis_server.client()
    for name in store.scan_iter(count=1000):
        value = store.dump(name) or b""
        for key in (KEY_A, KEY_B, ADMIN):
            assert key.encode() not in name and key.encode() not in value


def test_a_job_belongs_to_the_key_that_made_it(
    replicas: tuple[ServerProcess, ServerProcess],
) -> None:
    one, two = replicas
    with http(one, KEY_A) as a1, http(two, KEY_A) as a2, http(two, KEY_B) as b2, \
            http(two, ADMIN) as admin:  # fmt: skip
        created = a1.post(
            "/v1/audio/jobs", json={"input": "One line. Another line.", "response_format": "wav"}
        )
        assert created.status_code == 202, created.text
        job = created.json()["id"]
        done = finished(a2, job)
        assert done["status"] == "succeeded"
        paths = [f"/v1/audio/jobs/{job}", f"/v1/audio/jobs/{job}/chunks/0",
                 f"/v1/audio/jobs/{job}/audio"]  # fmt: skip
        for path in paths:
            assert a2.get(path).status_code == 200
            assert admin.get(path).status_code == 200
            refused = b2.get(path)
            assert refused.status_code == 404, path
            assert job not in refused.text or "no job" in refused.text
        assert b2.delete(f"/v1/audio/jobs/{job}").status_code == 404
        unknown = b2.get("/v1/audio/jobs/job_" + "0" * 32)
        assert unknown.json()["error"]["code"] == b2.get(paths[0]).json()["error"]["code"]



def test_speecht5_refuses_timestamps_and_says_so(
    replicas: tuple[ServerProcess, ServerProcess],
) -> None:
    """SpeechT5 predicts no per-token durations: word timestamps are a 400 naming why."""
    with http(replicas[0], KEY_A) as client:
        card = client.get("/v1/models").json()["data"][0]
        assert card["capabilities"] == {"voice_cloning": True, "word_timestamps": False}
        body = {"model": "tts-1", "voice": "alloy", "input": "Hello there."}
        for route, extra in [
            ("/v1/audio/captioned_speech", {}),
            ("/v1/audio/speech", {"stream_format": "sse", "timestamps": "word"}),
        ]:
            response = client.post(route, json=body | extra)
            assert response.status_code == 400, response.text
            error = response.json()["error"]
            assert error["code"] == "timestamps_unsupported" and error["param"] == "timestamps"
            assert "durations" in error["message"]
