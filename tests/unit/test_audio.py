from __future__ import annotations

import io
import struct

import numpy as np
import pytest
import soundfile as sf
from voicefleet_server.serving.audio import FORMATS, StreamEncoder, encode, output_rate

RATE = 16000
TONE = (0.4 * np.sin(2 * np.pi * 440 * np.arange(RATE) / RATE)).astype(np.float32)


def decode(data: bytes) -> tuple[np.ndarray, int]:
    samples, rate = sf.read(io.BytesIO(data), dtype="float32")
    return samples, rate


@pytest.mark.parametrize("name", ["wav", "flac", "mp3", "opus"])
def test_whole_files_decode_back_to_the_same_length(name: str) -> None:
    samples, rate = decode(encode(TONE, RATE, FORMATS[name]))
    assert rate == output_rate(FORMATS[name], RATE)
    # Lossy codecs add encoder delay (a few ms); lossless ones are exact in length.
    assert abs(len(samples) - len(TONE) * rate / RATE) <= (
        0 if name in {"wav", "flac"} else 0.1 * rate
    )


def test_pcm_is_raw_little_endian_int16() -> None:
    data = encode(TONE[:4], RATE, FORMATS["pcm"])
    assert struct.unpack("<4h", data) == tuple(round(float(x) * 32767) for x in TONE[:4])


def test_lossless_round_trip_is_accurate() -> None:
    samples, _ = decode(encode(TONE, RATE, FORMATS["flac"]))
    assert np.max(np.abs(samples - TONE)) < 1e-4


@pytest.mark.parametrize("name", ["wav", "mp3", "opus", "flac", "pcm"])
def test_streams_concatenate_into_a_decodable_file(name: str) -> None:
    encoder = StreamEncoder(FORMATS[name], RATE)
    chunks = [encoder.feed(TONE), encoder.feed(TONE), encoder.finish()]
    data = b"".join(chunks)
    if name == "pcm":
        assert len(data) == 2 * 2 * RATE
        return
    if name != "flac":
        assert chunks[0], "the first segment's audio must leave before the second is rendered"
    with sf.SoundFile(io.BytesIO(data)) as stream:
        frames = sum(len(block) for block in stream.blocks(blocksize=4096))
    rate = output_rate(FORMATS[name], RATE)
    assert abs(frames - 2 * rate) <= 0.1 * rate


def test_opus_audio_is_resampled_to_a_rate_opus_accepts() -> None:
    assert output_rate(FORMATS["opus"], 22050) == 24000
    _, rate = decode(encode(TONE, 22050, FORMATS["opus"]))
    assert rate == 24000
