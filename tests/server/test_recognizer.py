"""Speech checked by a listener: the default voice through the real HTTP server, decoded by
pocketsphinx, must be intelligible (mean word accuracy >= 0.5) in every serving mode.

Measured: real voices score 0.8-1.0 on these sentences, random weights ~0.01, white noise
0.0, so this tells speech from noise. One server per configuration, shared by the module.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from server_process import ServerProcess, start_server
from voicefleet_bench.recognizer import (
    LONGER_SENTENCES,
    SIMPLE_SENTENCES,
    Recognizer,
    read_wav,
    word_accuracy,
)

MIN_ACCURACY = 0.5
SENTENCES = SIMPLE_SENTENCES[:5]
# Both servers convert the bundled .onnx into this session's cache (the second one finds
# the first one's conversion), never the user's ~/.cache.
_CACHE = "VOICEFLEET_CACHE_DIR"


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.getbasetemp() / "voice-cache")


def _default_voice_server(logs: Path, cache: str, *args: str) -> ServerProcess:
    # No --model: the bundled voice. Batches of up to 8 form within 200 ms.
    return start_server(
        None,
        logs,
        "--no-autotune",
        "--max-batch-size",
        "8",
        "--batch-window-ms",
        "200",
        "--cache",
        "off",
        *args,
        ready_timeout=240,
        env={_CACHE: cache},
    )


@pytest.fixture(scope="module")
def fp32_server(
    tmp_path_factory: pytest.TempPathFactory, cache_dir: str
) -> Iterator[ServerProcess]:
    proc = _default_voice_server(tmp_path_factory.mktemp("fp32"), cache_dir, "--dtype", "float32")
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def bf16_server(
    tmp_path_factory: pytest.TempPathFactory, cache_dir: str
) -> Iterator[ServerProcess]:
    proc = _default_voice_server(tmp_path_factory.mktemp("bf16"), cache_dir, "--dtype", "bfloat16")
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def listener() -> Recognizer:
    return Recognizer()


def _speech(url: str, text: str, **extra: object) -> bytes:
    body = {"model": "tts-1", "input": text, "voice": "alloy", "response_format": "wav"}
    response = httpx.post(f"{url}/v1/audio/speech", json=body | extra, timeout=180)
    assert response.status_code == 200, response.text
    return response.content


def _mean_accuracy(listener: Recognizer, wavs: list[bytes], texts: tuple[str, ...]) -> float:
    scores = [listener.wav_accuracy(text, wav) for text, wav in zip(texts, wavs, strict=True)]
    return float(np.mean(scores))


def test_default_server_serves_the_bundled_voice(fp32_server: ServerProcess) -> None:
    models = httpx.get(f"{fp32_server.url}/v1/models", timeout=10).json()
    assert "en_US-joe-medium" in str(models)


def test_solo_requests_are_intelligible(fp32_server: ServerProcess, listener: Recognizer) -> None:
    wavs = [_speech(fp32_server.url, text) for text in SENTENCES]
    assert _mean_accuracy(listener, wavs, SENTENCES) >= MIN_ACCURACY


def test_eight_concurrent_callers_are_intelligible(
    fp32_server: ServerProcess, listener: Recognizer
) -> None:
    texts = SIMPLE_SENTENCES[:8]
    before = _batch_histogram(fp32_server.url)
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        wavs = list(pool.map(lambda text: _speech(fp32_server.url, text), texts))
    after = _batch_histogram(fp32_server.url)
    # Batches really formed (more items than model calls), and batched speech is speech.
    assert after["sum"] - before["sum"] > after["count"] - before["count"]
    assert _mean_accuracy(listener, wavs, texts) >= MIN_ACCURACY


def test_streamed_speech_is_intelligible(fp32_server: ServerProcess, listener: Recognizer) -> None:
    body = {
        "model": "tts-1",
        "input": " ".join(SENTENCES),
        "voice": "alloy",
        "response_format": "pcm",
        "stream_format": "audio",
    }
    chunks: list[bytes] = []
    with httpx.stream(
        "POST", f"{fp32_server.url}/v1/audio/speech", json=body, timeout=180
    ) as response:
        assert response.status_code == 200
        chunks.extend(response.iter_raw())
    pcm = np.frombuffer(b"".join(chunks), dtype="<i2").astype(np.float32) / 32768
    rate = read_wav(_speech(fp32_server.url, "Rate check."))[1]
    hypothesis = listener.transcribe(pcm, rate)
    assert word_accuracy(" ".join(SENTENCES), hypothesis) >= MIN_ACCURACY


@pytest.mark.parametrize("speed", [0.75, 1.5])
def test_speed_changes_pace_and_stays_intelligible(
    fp32_server: ServerProcess, listener: Recognizer, speed: float
) -> None:
    wavs = [_speech(fp32_server.url, text, speed=speed, seed=7) for text in SENTENCES]
    normal = [_speech(fp32_server.url, text, seed=7) for text in SENTENCES[:1]]
    ratio = len(read_wav(wavs[0])[0]) / len(read_wav(normal[0])[0])
    # Durations are whole frames per phoneme (rounded up), so the length follows 1/speed
    # only roughly (measured 0.74 at 1.5): at least half the requested change, right way.
    assert abs(ratio - 1 / speed) < 0.5 * abs(1 - 1 / speed)
    assert _mean_accuracy(listener, wavs, SENTENCES) >= MIN_ACCURACY


def test_bf16_autocast_is_intelligible(bf16_server: ServerProcess, listener: Recognizer) -> None:
    wavs = [_speech(bf16_server.url, text) for text in SENTENCES]
    assert _mean_accuracy(listener, wavs, SENTENCES) >= MIN_ACCURACY


@pytest.mark.slow
def test_longer_sentence_list_is_intelligible(
    fp32_server: ServerProcess, listener: Recognizer
) -> None:
    wavs = [_speech(fp32_server.url, text) for text in LONGER_SENTENCES]
    assert _mean_accuracy(listener, wavs, LONGER_SENTENCES) >= MIN_ACCURACY


def _batch_histogram(url: str) -> dict[str, float]:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    values = {}
    for line in text.splitlines():
        for key in ("sum", "count"):
            if line.startswith(f"voicefleet_batch_size_{key} "):
                values[key] = float(line.split()[1])
    return values
