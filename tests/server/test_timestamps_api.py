"""Word timestamps and SSE usage through real uvicorn, on the tiny VITS model: the shape
and invariants (input order, monotonic, covering the audio, batched = solo), the SSE
event order, usage, and the refusals (test_timestamps_real_voice.py checks the times
themselves against a recognizer)."""

from __future__ import annotations

import base64
import io
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import openai
import pytest
import soundfile as sf
from same_render import assert_same_render
from server_process import ServerProcess

TEXT = "Hello there, friend. It costs $3.50 today! See you at 10:30, Dr. Smith."
WORDS = ["Hello", "there", "friend", "It", "costs", "$3.50", "today", "See", "you", "at",
         "10:30", "Dr", "Smith"]  # fmt: skip


def captioned(client: httpx.Client, **body: Any) -> httpx.Response:
    payload = {"model": "tts-1", "voice": "alloy", "input": TEXT, "seed": 7} | body
    return client.post("/v1/audio/captioned_speech", json=payload)


def sse_events(response: httpx.Response) -> list[dict[str, Any]]:
    return [
        json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: ")
    ]


def wav_seconds(data: bytes) -> float:
    samples, rate = sf.read(io.BytesIO(data))
    return len(samples) / rate


def check_invariants(timestamps: list[dict[str, Any]], seconds: float) -> None:
    previous_end = 0.0
    for stamp in timestamps:
        assert stamp["start_time"] <= stamp["end_time"], stamp
        assert stamp["start_time"] >= previous_end - 1e-6, (stamp, previous_end)
        previous_end = stamp["end_time"]
    assert 0 <= seconds - previous_end <= 0.2, (seconds, previous_end)


def test_captioned_speech_gives_audio_and_word_times(client: httpx.Client) -> None:
    response = captioned(client, response_format="wav")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["format"] == "wav"
    audio = base64.b64decode(body["audio"])
    assert [t["word"] for t in body["timestamps"]] == WORDS
    check_invariants(body["timestamps"], wav_seconds(audio))
    # The audio is the same as /v1/audio/speech's for the same request.
    plain = client.post(
        "/v1/audio/speech",
        json={"model": "tts-1", "voice": "alloy", "input": TEXT, "seed": 7,
              "response_format": "wav"},
    )  # fmt: skip
    assert_same_render(plain.content, audio)


def test_sse_timestamps_precede_each_segment_and_usage_counts(client: httpx.Client) -> None:
    whole = captioned(client, response_format="pcm").json()
    response = client.post(
        "/v1/audio/speech",
        json={"model": "tts-1", "voice": "alloy", "input": TEXT, "seed": 7,
              "response_format": "pcm", "stream_format": "sse", "timestamps": "word"},
    )  # fmt: skip
    assert response.status_code == 200, response.text
    events = sse_events(response)
    kinds = [e["type"] for e in events]
    assert kinds[0] == "speech.audio.timestamps" and kinds[-1] == "speech.audio.done"
    # Three sentences: each one's words arrive before its audio.
    assert kinds.count("speech.audio.timestamps") == 3
    stamps = [t for e in events if e["type"] == "speech.audio.timestamps" for t in e["timestamps"]]
    assert stamps == whole["timestamps"]
    first_delta = kinds.index("speech.audio.delta")
    second_stamps = kinds.index("speech.audio.timestamps", first_delta)
    assert "speech.audio.delta" in kinds[second_stamps:]
    audio = b"".join(base64.b64decode(e["audio"]) for e in events if "audio" in e)
    assert_same_render(audio, base64.b64decode(whole["audio"]))
    usage = events[-1]["usage"]
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert usage["input_tokens"] > len(TEXT)  # model tokens: characters with blanks between
    assert usage["output_tokens"] > 0
    assert usage["audio_seconds"] == pytest.approx(len(audio) / 2 / 16000, abs=1e-3)


def test_batched_timestamps_equal_solo(client: httpx.Client, server: ServerProcess) -> None:
    texts = [f"Caller {i} says hello, then {'more ' * (i % 4)}words." for i in range(8)]

    def call(i: int) -> list[dict[str, Any]]:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            response = captioned(http, input=texts[i], seed=100 + i, response_format="pcm")
            assert response.status_code == 200, response.text
            return list(response.json()["timestamps"])

    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(call, range(8)))
    for i, stamps in enumerate(together):
        assert stamps == call(i), f"caller {i}: batched timestamps differ from solo"


def test_openai_client_streams_timestamps(server: ServerProcess) -> None:
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    with client.audio.speech.with_streaming_response.create(
        model="tts-1",
        voice={"id": "alloy"},
        input="One sentence. And another.",
        response_format="pcm",
        stream_format="sse",
        extra_body={"timestamps": "word", "seed": 3},
    ) as response:
        events = [
            json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data:")
        ]
    stamps = [t["word"] for e in events if e["type"] == "speech.audio.timestamps"
              for t in e["timestamps"]]  # fmt: skip
    assert stamps == ["One", "sentence", "And", "another"]
    assert set(events[-1]["usage"]) >= {"input_tokens", "output_tokens", "total_tokens"}


@pytest.mark.parametrize(
    ("route", "body", "param"),
    [
        ("/v1/audio/speech", {"timestamps": "word"}, "timestamps"),
        ("/v1/audio/speech", {"timestamps": "word", "stream_format": "audio"}, "timestamps"),
        ("/v1/audio/speech", {"timestamps": "sentence", "stream_format": "sse"}, "timestamps"),
        ("/v1/audio/captioned_speech", {"stream_format": "audio"}, "stream_format"),
    ],
)
def test_timestamps_where_they_cannot_go_are_refused(
    client: httpx.Client, route: str, body: dict[str, Any], param: str
) -> None:
    payload = {"model": "tts-1", "voice": "alloy", "input": "Hi there."} | body
    response = client.post(route, json=payload)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["message"]
