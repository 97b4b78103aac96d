"""Audio encoding for every response format, whole-file and streaming.

soundfile's bundled libsndfile writes WAV, FLAC and Ogg/Opus; LAME (lameenc) writes
MP3 as plain CBR frames that concatenate, which libsndfile's MP3 writer cannot (its
VBR tag counts frames at close). Whole files get exact headers. Streams send bytes as
segments arrive: WAV with the conventional 0xFFFFFFFF "unknown size" header, PCM raw
16-bit little-endian, MP3 frames, Ogg/Opus pages. FLAC needs its length in its
header, so a streamed FLAC arrives in one piece when complete.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from math import gcd

import lameenc
import numpy as np
import soundfile as sf
from scipy.signal import resample_poly


@dataclass(frozen=True, slots=True)
class AudioFormat:
    name: str
    media_type: str
    container: str | None  # soundfile format; None for raw PCM
    subtype: str | None
    # Sample rates the codec accepts; the audio is resampled up to the nearest one.
    rates: tuple[int, ...] | None = None


FORMATS: dict[str, AudioFormat] = {
    "wav": AudioFormat("wav", "audio/wav", "WAV", "PCM_16"),
    "pcm": AudioFormat("pcm", "audio/pcm", None, None),
    "flac": AudioFormat("flac", "audio/flac", "FLAC", "PCM_16"),
    "mp3": AudioFormat(
        "mp3",
        "audio/mpeg",
        "MP3",
        None,
        (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000),
    ),
    "opus": AudioFormat("opus", "audio/ogg", "OGG", "OPUS", (8000, 12000, 16000, 24000, 48000)),
}
# OpenAI lists aac; libsndfile has no AAC encoder, so it is refused with a clear 400.
UNSUPPORTED_FORMATS = {"aac": "aac has no encoder in this build; use mp3, opus, flac, wav or pcm"}


def output_rate(fmt: AudioFormat, rate: int) -> int:
    if fmt.rates is None or rate in fmt.rates:
        return rate
    higher = [r for r in fmt.rates if r >= rate]
    return min(higher) if higher else max(fmt.rates)


def resample(samples: np.ndarray, source: int, target: int) -> np.ndarray:
    if source == target or samples.size == 0:
        return samples
    divisor = gcd(source, target)
    return resample_poly(samples, target // divisor, source // divisor).astype(np.float32)


def to_pcm16(samples: np.ndarray) -> bytes:
    clipped = np.clip(samples, -1.0, 1.0)
    # Rounded like libsndfile, so a pcm response equals the samples of the same wav.
    return np.rint(clipped * 32767.0).astype("<i2").tobytes()


MP3_BITRATE_KBPS = 64


def _mp3_encoder(rate: int) -> lameenc.Encoder:
    encoder = lameenc.Encoder()
    encoder.set_bit_rate(MP3_BITRATE_KBPS)
    encoder.set_in_sample_rate(rate)
    encoder.set_channels(1)
    encoder.set_quality(2)
    return encoder


def encode(samples: np.ndarray, rate: int, fmt: AudioFormat) -> bytes:
    """A complete file in `fmt`."""
    if fmt.container is None:
        return to_pcm16(samples)
    if fmt.name == "mp3":
        target = output_rate(fmt, rate)
        encoder = _mp3_encoder(target)
        return bytes(encoder.encode(to_pcm16(resample(samples, rate, target)))) + bytes(
            encoder.flush()
        )
    target = output_rate(fmt, rate)
    audio = resample(samples, rate, target)
    if fmt.subtype == "PCM_16":
        # Quantize here rather than in libsndfile, so wav, flac and pcm carry identical samples.
        audio = np.frombuffer(to_pcm16(audio), dtype="<i2")
    buffer = io.BytesIO()
    sf.write(buffer, audio, target, format=fmt.container, subtype=fmt.subtype)
    return buffer.getvalue()


def wav_header(rate: int, samples: int | None = None) -> bytes:
    """16-bit mono WAV header; `samples=None` writes the streaming "unknown size" form."""
    unknown = 0xFFFFFFFF
    data = unknown if samples is None else samples * 2
    riff = unknown if samples is None else 36 + data
    return (
        b"RIFF"
        + struct.pack("<I", riff)
        + b"WAVE"
        + b"fmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
        + b"data"
        + struct.pack("<I", data)
    )


def join_with_pauses(waves: Sequence[np.ndarray], pause_samples: int) -> np.ndarray:
    """Concatenate segments with `pause_samples` of silence between them."""
    pause = np.zeros(pause_samples, dtype=np.float32)
    pieces: list[np.ndarray] = []
    for index, wave in enumerate(waves):
        if index:
            pieces.append(pause)
        pieces.append(wave)
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)


class _AppendOnlySink(io.RawIOBase):
    """A seekable sink that hands out only bytes past what was already sent.

    libsndfile seeks back at close to patch lengths into headers that are already on
    the wire; those patches are dropped (the headers keep 'unknown length')."""

    def __init__(self) -> None:
        self._data = bytearray()
        self._pos = 0
        self._sent = 0

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def write(self, chunk: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        data = bytes(chunk)
        end = self._pos + len(data)
        if end > len(self._data):
            self._data.extend(b"\0" * (end - len(self._data)))
        if end > self._sent:
            start = max(self._pos, self._sent)
            self._data[start:end] = data[start - self._pos :]
        self._pos = end
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self._data)}[whence]
        self._pos = base + offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def take(self) -> bytes:
        out = bytes(self._data[self._sent :])
        self._sent = len(self._data)
        return out


class StreamEncoder:
    """Encodes audio chunk by chunk; `feed` and `finish` return bytes ready to send."""

    def __init__(self, fmt: AudioFormat, rate: int) -> None:
        self._fmt = fmt
        self._rate = rate
        self._target = output_rate(fmt, rate)
        self._started = False
        self._sink: _AppendOnlySink | None = None
        self._writer: sf.SoundFile | None = None
        self._mp3: lameenc.Encoder | None = None
        self._held: list[np.ndarray] = []

    def feed(self, samples: np.ndarray) -> bytes:
        if self._fmt.container is None:
            return to_pcm16(samples)
        if self._fmt.name == "wav":
            header = b"" if self._started else wav_header(self._rate)
            self._started = True
            return header + to_pcm16(samples)
        if self._fmt.name == "flac":
            self._held.append(samples)
            return b""
        if self._fmt.name == "mp3":
            if self._mp3 is None:
                self._mp3 = _mp3_encoder(self._target)
            return bytes(self._mp3.encode(to_pcm16(resample(samples, self._rate, self._target))))
        if self._writer is None:
            self._sink = _AppendOnlySink()
            self._writer = sf.SoundFile(
                self._sink,
                "w",
                samplerate=self._target,
                channels=1,
                format=self._fmt.container,
                subtype=self._fmt.subtype,
            )
        self._writer.write(resample(samples, self._rate, self._target))
        assert self._sink is not None
        return self._sink.take()

    def finish(self) -> bytes:
        if self._fmt.name == "flac":
            return encode(np.concatenate(self._held), self._rate, self._fmt) if self._held else b""
        if self._mp3 is not None:
            return bytes(self._mp3.flush())
        if self._writer is None or self._sink is None:
            return b""
        self._writer.close()
        return self._sink.take()
