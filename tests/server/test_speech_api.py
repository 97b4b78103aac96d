"""The OpenAI-compatible speech API through real uvicorn, on the tiny model."""

from __future__ import annotations

import base64
import io
import json
from concurrent.futures import ThreadPoolExecutor

import av
import httpx
import numpy as np
import openai
import pytest
import soundfile as sf
from same_render import assert_same_render, assert_same_samples
from server_process import ServerProcess

MODEL = "tts-1"


def speech(client: httpx.Client, **body: object) -> httpx.Response:
    payload = {"model": MODEL, "voice": "alloy", "input": "Hello there. How are you today?"} | body
    return client.post("/v1/audio/speech", json=payload)


def pcm(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32767


def decoded_seconds(data: bytes) -> float:
    """Seconds of audio FFmpeg decodes from a file of any of our formats."""
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        return sum(f.samples / f.sample_rate for f in container.decode(stream))


@pytest.mark.parametrize(
    ("fmt", "media_type"),
    [
        ("wav", "audio/wav"),
        ("flac", "audio/flac"),
        ("mp3", "audio/mpeg"),
        ("opus", "audio/ogg"),
        ("aac", "audio/aac"),
    ],
)
def test_each_format_decodes(client: httpx.Client, fmt: str, media_type: str) -> None:
    response = speech(client, response_format=fmt, seed=1)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == media_type
    reference = speech(client, response_format="pcm", seed=1).content
    # Lossy codecs add at most a frame or two of encoder delay and padding.
    assert abs(decoded_seconds(response.content) - len(reference) / 2 / 16000) < 0.15


def test_aac_streams_segment_by_segment(client: httpx.Client) -> None:
    body = {"input": "First sentence here. Second one follows. And a third to close."}
    with client.stream(
        "POST",
        "/v1/audio/speech",
        json={"model": MODEL, "voice": "alloy", "response_format": "aac", "seed": 2}
        | body
        | {"stream_format": "audio"},
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "audio/aac"
        chunks = [c for c in response.iter_raw() if c]
    assert len(chunks) >= 2
    assert chunks[0][:2] == b"\xff\xf1", "ADTS frames from the first byte"
    assert decoded_seconds(b"".join(chunks)) > 1.0


def test_pcm_matches_wav(client: httpx.Client) -> None:
    raw = speech(client, response_format="pcm", seed=3).content
    wav, rate = sf.read(
        io.BytesIO(speech(client, response_format="wav", seed=3).content), dtype="int16"
    )
    assert rate == 16000
    assert_same_samples(np.frombuffer(raw, dtype="<i2"), wav)


def test_default_format_is_mp3_like_openai(client: httpx.Client) -> None:
    response = speech(client)
    assert response.headers["content-type"] == "audio/mpeg"


def test_audio_stream_arrives_in_chunks_and_equals_the_whole_render(client: httpx.Client) -> None:
    text = "First sentence here. Second one follows. And a third to close."
    whole = speech(client, input=text, response_format="pcm", seed=9).content
    with client.stream(
        "POST",
        "/v1/audio/speech",
        json={
            "model": MODEL,
            "voice": "alloy",
            "input": text,
            "response_format": "pcm",
            "stream_format": "audio",
            "seed": 9,
        },
    ) as response:
        assert response.status_code == 200
        chunks = [c for c in response.iter_raw() if c]
    assert len(chunks) >= 2
    assert_same_render(b"".join(chunks), whole)


def test_sse_stream_sends_deltas_then_done(client: httpx.Client) -> None:
    text = "One. Two. Three."
    whole = speech(client, input=text, response_format="pcm", seed=4).content
    response = speech(client, input=text, response_format="pcm", stream_format="sse", seed=4)
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [
        json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: ")
    ]
    assert [e["type"] for e in events][-1] == "speech.audio.done"
    deltas = [base64.b64decode(e["audio"]) for e in events if e["type"] == "speech.audio.delta"]
    assert len(deltas) == 3
    assert_same_render(b"".join(deltas), whole)


def test_seed_makes_a_request_reproducible(client: httpx.Client) -> None:
    first, second = (speech(client, response_format="pcm", seed=42).content for _ in range(2))
    other = speech(client, response_format="pcm", seed=43).content
    assert first == second
    assert first != other


def test_longer_input_gives_longer_audio(client: httpx.Client) -> None:
    short = speech(client, input="Hi.", response_format="pcm", seed=1).content
    long = speech(
        client,
        input="Hi. " + "This is a considerably longer text. " * 4,
        response_format="pcm",
        seed=1,
    )
    assert len(long.content) > 3 * len(short)


def test_sixteen_concurrent_callers_each_get_their_own_audio(
    client: httpx.Client, server: ServerProcess
) -> None:
    """Cross-talk check: every concurrent answer equals the same request rendered alone."""
    texts = [f"Caller number {i} says: " + "word " * (i % 5 + 1) for i in range(16)]

    def call(i: int) -> bytes:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            response = speech(http, input=texts[i], response_format="pcm", seed=1000 + i)
            assert response.status_code == 200, response.text
            return response.content

    batches_before = _metric(client, "voicefleet_batch_size_count")
    segments_before = _metric(client, "voicefleet_batch_size_sum")
    with ThreadPoolExecutor(16) as pool:
        concurrent = list(pool.map(call, range(16)))
    batches = _metric(client, "voicefleet_batch_size_count") - batches_before
    segments = _metric(client, "voicefleet_batch_size_sum") - segments_before
    assert segments / batches > 1.5, "concurrent requests should have shared batches"
    for i, audio in enumerate(concurrent):
        solo = speech(client, input=texts[i], response_format="pcm", seed=1000 + i).content
        assert len(audio) == len(solo), f"caller {i} got audio of another length"
        assert np.max(np.abs(pcm(audio) - pcm(solo))) < 2e-2, f"caller {i} got someone else's audio"


def test_openai_client_works_unchanged(server: ServerProcess, tmp_path: object) -> None:
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="not-needed")
    response = client.audio.speech.create(
        model="tts-1", voice="nova", input="Hello from the SDK.", response_format="wav"
    )
    samples, rate = sf.read(io.BytesIO(response.content))
    assert rate == 16000 and len(samples) > 0
    with client.audio.speech.with_streaming_response.create(
        model="tts-1", voice="nova", input="Streaming. Through the SDK.", response_format="pcm"
    ) as streamed:
        data = b"".join(streamed.iter_bytes())
    assert len(data) > 0 and len(data) % 2 == 0
    # OpenAI's voice object, as the SDK sends custom voices, is the same voice.
    by_name, by_object = (
        client.audio.speech.create(
            model="tts-1",
            voice=voice,  # type: ignore[arg-type]
            input="Hello from the SDK.",
            response_format="pcm",
            extra_body={"seed": 5},
        ).content
        for voice in ("nova", {"id": "nova"})
    )
    assert by_name and by_name == by_object
    models = client.models.list()
    assert [m.id for m in models.data]
    with pytest.raises(openai.BadRequestError) as bad:
        client.audio.speech.create(model="tts-1", voice="nova", input="", response_format="wav")
    assert bad.value.status_code == 400


def test_models_and_voices(client: httpx.Client) -> None:
    models = client.get("/v1/models").json()
    assert models["object"] == "list" and models["data"][0]["object"] == "model"
    voices = client.get("/v1/audio/voices").json()["data"]
    assert voices[0]["id"] == "default" and "alloy" in voices[0]["aliases"]
    assert speech(client, voice="default").status_code == 200


BAD_REQUESTS = [
    ({"input": ""}, 400, "input"),
    ({"input": "   \n\t "}, 400, "input"),
    ({"input": "x" * 5000}, 400, "input"),
    ({"input": "日本語のみ"}, 400, "input"),
    ({"input": 42}, 400, "input"),
    ({"voice": "nobody"}, 400, "voice"),
    ({"voice": {"id": "nobody"}}, 400, "voice"),
    ({"voice": {"name": "alloy"}}, 400, "voice"),
    ({"voice": {"id": ""}}, 400, "voice"),
    ({"voice": ["alloy"]}, 400, "voice"),
    ({"response_format": "ogg-vorbis"}, 400, "response_format"),
    ({"speed": 0.1}, 400, "speed"),
    ({"speed": 1e9}, 400, "speed"),
    ({"speed": "fast"}, 400, "speed"),
    ({"seed": -1}, 400, "seed"),
    ({"seed": 2**70}, 400, "seed"),
    ({"stream_format": "video"}, 400, "stream_format"),
    ({"unknown_field": 1}, 400, "unknown_field"),
    ({"model": "whisper-1"}, 404, "model"),
]


@pytest.mark.parametrize(("override", "status", "param"), BAD_REQUESTS)
def test_bad_input_gets_a_clear_openai_error(
    client: httpx.Client, override: dict[str, object], status: int, param: str
) -> None:
    response = speech(client, **override)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["message"] and error["type"] == "invalid_request_error"
    assert error["param"] == param


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (b"{not json", {"content-type": "application/json"}),
        (b"\xff\xfe\x00garbage", {"content-type": "application/json"}),
        (b"[1, 2, 3]", {"content-type": "application/json"}),
        (b"", {"content-type": "application/json"}),
    ],
)
def test_malformed_bodies_are_400(
    client: httpx.Client, body: bytes, headers: dict[str, str]
) -> None:
    response = client.post("/v1/audio/speech", content=body, headers=headers)
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_huge_bodies_are_refused_before_parsing(client: httpx.Client) -> None:
    response = client.post(
        "/v1/audio/speech",
        content=b"x" * (10 * 2**20),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"


def test_unknown_routes_answer_in_the_error_shape(client: httpx.Client) -> None:
    response = client.get("/v1/nothing-here")
    assert response.status_code == 404 and "error" in response.json()


def test_health_readiness_and_metrics(client: httpx.Client) -> None:
    assert client.get("/healthz").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["state"] == "ready"
    speech(client)
    text = client.get("/metrics").text
    for name in (
        "voicefleet_requests_total",
        "voicefleet_request_duration_seconds_bucket",
        "voicefleet_queue_wait_seconds_bucket",
        "voicefleet_time_to_first_audio_seconds_bucket",
        "voicefleet_batch_size_bucket",
        "voicefleet_batch_padding_waste_ratio_bucket",
        "voicefleet_queue_depth",
        "voicefleet_queued_audio_seconds",
        "voicefleet_audio_seconds_total",
        "voicefleet_real_time_factor_bucket",
        "voicefleet_cache_hits_total",
        "voicefleet_cache_misses_total",
        "voicefleet_gpu_memory_used_bytes",
        "voicefleet_gpu_memory_budget_bytes",
        "voicefleet_redis_up",
        "voicefleet_fp32_reruns_total",
    ):
        assert f"\n{name}" in text, name
    assert 'voicefleet_requests_total{route="/v1/audio/speech",status="200"}' in text


def test_playground_page(client: httpx.Client) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "/v1/audio/speech" in page.text


def _metric(client: httpx.Client, name: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not exported")


def test_renders_with_other_seeds_are_not_the_same_render(client: httpx.Client) -> None:
    """The rounding allowance of `assert_same_render` cannot hide other noise."""
    one = speech(client, response_format="pcm", seed=1).content
    other = speech(client, response_format="pcm", seed=2).content
    with pytest.raises(AssertionError):
        assert_same_render(one, other)
