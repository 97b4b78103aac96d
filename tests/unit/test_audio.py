from __future__ import annotations

import io
import struct
import tempfile

import av
import numpy as np
import pytest
import soundfile as sf
from voicefleet_server.serving.audio import FORMATS, StreamEncoder, encode, output_rate

RATE = 16000
TONE = (0.4 * np.sin(2 * np.pi * 440 * np.arange(RATE) / RATE)).astype(np.float32)
LOSSY = {"mp3", "opus", "aac"}


def length_slack(name: str, rate: int) -> float:
    """Samples a decoded file may differ from what was encoded: none for lossless formats;
    encoder delay for lossy ones, up to 2048 for AAC (ADTS cannot signal its priming
    frame, and the last frame is padded to 1024 samples)."""
    if name not in LOSSY:
        return 0
    return 2048 if name == "aac" else 0.1 * rate


def decode(data: bytes) -> tuple[np.ndarray, int]:
    """Samples and rate as FFmpeg's decoders read them (libsndfile has no AAC)."""
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        # Opus always decodes at 48 kHz; the Ogg header keeps the encoded rate.
        rate = int(stream.codec_context.sample_rate)
        frames = [f.to_ndarray().reshape(-1) for f in container.decode(stream)]
    samples = np.concatenate(frames).astype(np.float32)
    if samples.dtype != np.float32 or np.abs(samples).max() > 1.5:
        samples = samples / 32768.0
    return samples, rate


def adts_frames(data: bytes) -> list[int]:
    """Lengths of the ADTS frames `data` consists of; fails on anything else."""
    lengths = []
    offset = 0
    while offset < len(data):
        header = data[offset : offset + 7]
        assert len(header) == 7 and header[0] == 0xFF and header[1] & 0xF0 == 0xF0, offset
        length = ((header[3] & 0x03) << 11) | (header[4] << 3) | (header[5] >> 5)
        assert length >= 7 and offset + length <= len(data), "a partial ADTS frame"
        lengths.append(length)
        offset += length
    return lengths


@pytest.mark.parametrize("name", ["wav", "flac", "mp3", "opus", "aac"])
def test_whole_files_decode_back_to_the_same_length(name: str) -> None:
    samples, rate = decode(encode(TONE, RATE, FORMATS[name]))
    expected_rate = 48000 if name == "opus" else output_rate(FORMATS[name], RATE)
    assert rate == expected_rate
    # Lossy codecs add encoder delay (a few ms); lossless ones are exact in length.
    assert abs(len(samples) - len(TONE) * rate / RATE) <= length_slack(name, rate)


@pytest.mark.parametrize("name", ["mp3", "opus", "aac"])
def test_lossy_formats_keep_the_tone(name: str) -> None:
    samples, rate = decode(encode(TONE, RATE, FORMATS[name]))
    middle = samples[rate // 4 : 3 * rate // 4]
    peak = np.argmax(np.abs(np.fft.rfft(middle))) * rate / len(middle)
    assert abs(peak - 440) < 5
    assert 0.3 < np.abs(middle).max() < 0.5


def test_pcm_is_raw_little_endian_int16() -> None:
    data = encode(TONE[:4], RATE, FORMATS["pcm"])
    assert struct.unpack("<4h", data) == tuple(round(float(x) * 32767) for x in TONE[:4])


def test_wav_pcm_and_flac_carry_identical_samples() -> None:
    pcm = np.frombuffer(encode(TONE, RATE, FORMATS["pcm"]), dtype="<i2")
    wav, _ = sf.read(io.BytesIO(encode(TONE, RATE, FORMATS["wav"])), dtype="int16")
    flac, _ = sf.read(io.BytesIO(encode(TONE, RATE, FORMATS["flac"])), dtype="int16")
    assert np.array_equal(pcm, wav)
    assert np.array_equal(pcm, flac)


@pytest.mark.parametrize("name", ["wav", "mp3", "opus", "flac", "pcm", "aac"])
def test_streams_concatenate_into_a_decodable_file(name: str) -> None:
    encoder = StreamEncoder(FORMATS[name], RATE)
    chunks = [encoder.feed(TONE), encoder.feed(TONE), encoder.finish()]
    data = b"".join(chunks)
    if name == "pcm":
        assert len(data) == 2 * 2 * RATE
        return
    if name == "flac":
        assert chunks[:2] == [b"", b""], "a streamed flac leaves whole, with its length"
    else:
        # The first segment's audio leaves before the second is rendered (not just a header).
        early, rate = decode(chunks[0])
        assert len(early) >= 0.8 * rate
    samples, rate = decode(data)
    assert abs(len(samples) - 2 * rate) <= length_slack(name, rate)


def test_streamed_aac_leaves_in_whole_adts_frames() -> None:
    encoder = StreamEncoder(FORMATS["aac"], RATE)
    pieces = [encoder.feed(TONE[i : i + 3000]) for i in range(0, len(TONE), 3000)]
    pieces.append(encoder.finish())
    sent = [p for p in pieces if p]
    # Most feeds send something, and every piece is a run of complete frames.
    assert len(sent) >= len(pieces) - 2
    frames = [adts_frames(p) for p in sent]
    assert sum(len(f) for f in frames) >= RATE // 1024
    assert adts_frames(b"".join(pieces))


def test_streaming_an_empty_wav_still_sends_a_header() -> None:
    encoder = StreamEncoder(FORMATS["wav"], RATE)
    assert encoder.finish()[:4] == b"RIFF"


def test_opus_audio_is_resampled_to_a_rate_opus_accepts() -> None:
    assert output_rate(FORMATS["opus"], 22050) == 24000
    info = sf.info(io.BytesIO(encode(TONE, 22050, FORMATS["opus"])))
    assert info.samplerate == 24000


def test_streamed_resampling_keeps_the_pitch_across_chunks() -> None:
    rate = 22050
    tone = (0.4 * np.sin(2 * np.pi * 440 * np.arange(rate) / rate)).astype(np.float32)
    encoder = StreamEncoder(FORMATS["mp3"], rate)
    out = b"".join(
        [*(encoder.feed(tone[i : i + 2205]) for i in range(0, rate, 2205)), encoder.finish()]
    )
    samples, got = decode(out)
    assert got == 22050
    peak = np.argmax(np.abs(np.fft.rfft(samples[2000:18000]))) * got / 16000
    assert abs(peak - 440) < 5


def test_a_seekable_target_gets_a_whole_file_with_exact_headers() -> None:
    with tempfile.TemporaryFile() as spool:
        encoder = StreamEncoder(FORMATS["flac"], RATE, out=spool)
        assert encoder.feed(TONE) == b""
        assert encoder.feed(TONE) == b""
        assert encoder.finish() == b""
        spool.seek(0)
        info = sf.info(io.BytesIO(spool.read()))
    assert info.frames == 2 * RATE
