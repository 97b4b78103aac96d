"""Audio encoding for every response format, whole-file and streaming.

WAV and raw PCM are written here (a 44-byte header and 16-bit samples). FLAC, MP3, Ogg/Opus
and AAC (ADTS) go through FFmpeg's encoders and muxers as bundled in the `av` wheel; its
resampler brings the audio to a rate the codec accepts, keeping filter state across a
stream's chunks (no clicks at segment boundaries). Every format starts from the same
16-bit samples, so wav, pcm and flac carry identical audio.

Whole files are muxed into a seekable buffer, so headers are exact (FLAC's STREAMINFO
length, MP3's Xing frame count). Streams are muxed into a write-only sink: the muxers
then write their streaming forms and the bytes leave as they are made: WAV with the
conventional 0xFFFFFFFF "unknown size" header, PCM, MP3 frames, Ogg pages (at most
`OGG_PAGE_US` of audio each) and ADTS frames. A FLAC without its length in the header
is unreadable to libsndfile, so a streamed FLAC arrives in one piece when complete.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import BinaryIO

import av
import numpy as np

# An Ogg page is flushed once it holds this much audio (FFmpeg's default, 1 s, would hold
# back a streamed segment's audio until the next one).
OGG_PAGE_US = 100_000
LAME_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
AAC_RATES = (7350, 8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200)


@dataclass(frozen=True, slots=True)
class AudioFormat:
    name: str
    media_type: str
    codec: str | None = None  # FFmpeg encoder; None for wav and pcm (written here)
    container: str | None = None  # FFmpeg muxer
    # Sample rates the codec accepts; the audio is resampled up to the nearest one.
    rates: tuple[int, ...] | None = None
    bit_rate: int | None = None
    muxer_options: tuple[tuple[str, str], ...] = field(default=())
    # The header needs the length, so a stream of it is sent whole at the end.
    streams_whole: bool = False


FORMATS: dict[str, AudioFormat] = {
    "wav": AudioFormat("wav", "audio/wav"),
    "pcm": AudioFormat("pcm", "audio/pcm"),
    "flac": AudioFormat("flac", "audio/flac", "flac", "flac", streams_whole=True),
    "mp3": AudioFormat("mp3", "audio/mpeg", "libmp3lame", "mp3", LAME_RATES, 64_000),
    "opus": AudioFormat(
        "opus",
        "audio/ogg",
        "libopus",
        "ogg",
        OPUS_RATES,
        32_000,
        (("page_duration", str(OGG_PAGE_US)),),
    ),
    "aac": AudioFormat("aac", "audio/aac", "aac", "adts", AAC_RATES, 64_000),
}
# Formats OpenAI lists that this build cannot write, with the reason (none at present).
UNSUPPORTED_FORMATS: dict[str, str] = {}


def output_rate(fmt: AudioFormat, rate: int) -> int:
    if fmt.rates is None or rate in fmt.rates:
        return rate
    higher = [r for r in fmt.rates if r >= rate]
    return min(higher) if higher else max(fmt.rates)


def to_pcm16(samples: np.ndarray) -> bytes:
    clipped = np.clip(samples, -1.0, 1.0)
    # Rounded, not truncated, so every format carries the same samples as the wav.
    return np.rint(clipped * 32767.0).astype("<i2").tobytes()


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


class _WriteOnlySink:
    """Collects what the muxer writes until taken. It has no `seek`, so FFmpeg's muxers
    write their streaming forms instead of patching headers already on the wire."""

    def __init__(self) -> None:
        self._data = bytearray()

    def write(self, chunk: bytes | bytearray | memoryview) -> int:
        self._data += chunk
        return len(chunk)

    def take(self) -> bytes:
        out = bytes(self._data)
        self._data.clear()
        return out


class _Muxer:
    """One FFmpeg encoder + muxer writing 16-bit mono audio into `out`."""

    def __init__(self, fmt: AudioFormat, rate: int, out: BinaryIO | _WriteOnlySink) -> None:
        assert fmt.codec is not None and fmt.container is not None
        self._rate = rate
        self._fed = 0
        self._container = av.open(out, "w", format=fmt.container, options=dict(fmt.muxer_options))
        stream = self._container.add_stream(fmt.codec, rate=output_rate(fmt, rate), layout="mono")
        assert isinstance(stream, av.AudioStream)
        self._stream: av.AudioStream = stream
        if fmt.bit_rate is not None:
            self._stream.bit_rate = fmt.bit_rate

    def write(self, samples: np.ndarray) -> None:
        if samples.size == 0:
            return
        pcm = np.frombuffer(to_pcm16(samples), dtype="<i2").reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = self._rate
        frame.pts = self._fed
        frame.time_base = Fraction(1, self._rate)
        self._fed += pcm.shape[1]
        # The codec context re-frames (AAC takes 1024 samples a frame) and resamples.
        for packet in self._stream.encode(frame):
            self._container.mux(packet)

    def close(self) -> None:
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self._container.close()


def encode(samples: np.ndarray, rate: int, fmt: AudioFormat) -> bytes:
    """A complete file in `fmt`, with exact headers."""
    if fmt.name == "pcm":
        return to_pcm16(samples)
    if fmt.name == "wav":
        return wav_header(rate, len(samples)) + to_pcm16(samples)
    out = io.BytesIO()
    muxer = _Muxer(fmt, rate, out)
    muxer.write(samples)
    muxer.close()
    return out.getvalue()


class StreamEncoder:
    """Encodes audio chunk by chunk; `feed` and `finish` return bytes ready to send.

    With `out` (a seekable file), the encoded file is written there instead and both
    return nothing: a whole file made piece by piece, with exact headers."""

    def __init__(self, fmt: AudioFormat, rate: int, out: BinaryIO | None = None) -> None:
        self._fmt = fmt
        self._rate = rate
        self._started = False
        self._whole = io.BytesIO() if out is None and fmt.streams_whole else None
        self._sink = _WriteOnlySink()
        target = out if out is not None else self._whole
        self._muxer = None if fmt.codec is None else _Muxer(fmt, rate, target or self._sink)

    def feed(self, samples: np.ndarray) -> bytes:
        if self._muxer is None:
            pcm = to_pcm16(samples)
            if self._fmt.name == "wav" and not self._started:
                pcm = wav_header(self._rate) + pcm
            self._started = True
            return pcm
        self._muxer.write(samples)
        return self._sink.take()

    def finish(self) -> bytes:
        if self._muxer is None:
            # A stream with no audio is still a valid (empty) wav.
            empty = self._fmt.name == "wav" and not self._started
            self._started = True
            return wav_header(self._rate) if empty else b""
        self._muxer.close()
        if self._whole is not None:
            return self._whole.getvalue()
        return self._sink.take()
