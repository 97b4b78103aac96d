"""The voice library without Redis: upload validation, content-hash ids, one encoder run
per clip (even for concurrent uploads), listing and deletion. A counting fake stands in
for the speaker encoder; the real one is covered in test_speecht5.py and end to end."""

from __future__ import annotations

import asyncio
import io
import time

import numpy as np
import pytest
import soundfile
from voicefleet_server.config import ServerSettings
from voicefleet_server.metrics import Metrics
from voicefleet_server.serving.errors import InputTooLarge, InvalidAudio, NotFound
from voicefleet_server.serving.tenancy import ANYONE, Principal, key_id
from voicefleet_server.serving.voices import (
    UploadedVoice,
    VoiceLibrary,
    decode_reference,
    resample,
)


def encoded(seconds: float, rate: int = 16000, fmt: str = "WAV", channels: int = 1) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.4 * np.sin(2 * np.pi * 220 * t)
    data = np.stack([wave] * channels, axis=1) if channels > 1 else wave
    out = io.BytesIO()
    subtype = {"WAV": "PCM_16", "FLAC": "PCM_16", "OGG": "VORBIS", "MP3": None}[fmt]
    soundfile.write(out, data.astype(np.float32), rate, format=fmt, subtype=subtype)
    return out.getvalue()


class FakeEncoder:
    sampling_rate = 16000
    embedding_dim = 4

    def __init__(self) -> None:
        self.runs = 0
        self.lengths: list[int] = []

    def embed(self, waveform: np.ndarray) -> np.ndarray:
        self.runs += 1
        self.lengths.append(len(waveform))
        time.sleep(0.05)  # long enough for concurrent uploads to overlap
        return np.array([1, 0, 0, 0], np.float32)


@pytest.fixture
def library() -> tuple[VoiceLibrary, FakeEncoder]:
    settings = ServerSettings(voice_max_upload_mb=1, voice_max_seconds=5)
    lib = VoiceLibrary(settings, Metrics(), None)
    fake = FakeEncoder()
    lib.encoder = fake  # type: ignore[assignment]
    return lib, fake


@pytest.mark.parametrize("fmt", ["WAV", "FLAC", "OGG", "MP3"])
def test_decodes_the_accepted_formats_to_mono(fmt: str) -> None:
    samples, rate = decode_reference(encoded(1.0, 44100, fmt, channels=2), max_seconds=5)
    assert rate == 44100 and samples.ndim == 1
    assert abs(len(samples) / rate - 1.0) < 0.1
    assert len(resample(samples, rate, 16000)) == pytest.approx(len(samples) * 16000 / 44100, 1)


def encoded_with_ffmpeg(seconds: float, container: str, codec: str) -> bytes:
    """A clip as phones (m4a/aac) and browsers (webm/opus) record them."""
    import av

    rate = 48000
    t = np.arange(int(seconds * rate)) / rate
    pcm = (0.4 * np.sin(2 * np.pi * 220 * t) * 32767).astype("<i2").reshape(1, -1)
    out = io.BytesIO()
    with av.open(out, "w", format=container) as muxer:
        stream = muxer.add_stream(codec, rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            muxer.mux(packet)
    return out.getvalue()


@pytest.mark.parametrize(("container", "codec"), [("mp4", "aac"), ("webm", "libopus")])
def test_decodes_phone_and_browser_recordings(container: str, codec: str) -> None:
    samples, rate = decode_reference(encoded_with_ffmpeg(1.0, container, codec), max_seconds=5)
    assert rate == 48000 and abs(len(samples) / rate - 1.0) < 0.1


def test_refuses_what_is_not_an_audio_file() -> None:
    png = b"\x89PNG\r\n\x1a\n" + bytes(200)
    with pytest.raises(InvalidAudio, match="not readable audio"):
        decode_reference(png, max_seconds=5)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"RIFF but not really a wav file at all", "not readable audio"),
        (encoded(6.0), "the limit is 5 s"),
        (encoded(0.1), "at least 0.5 s"),
    ],
)
def test_refuses_unusable_clips(data: bytes, message: str) -> None:
    with pytest.raises(InvalidAudio, match=message) as caught:
        decode_reference(data, max_seconds=5)
    assert caught.value.status == 422


def test_refuses_silence() -> None:
    out = io.BytesIO()
    soundfile.write(out, np.zeros(16000, np.float32), 16000, format="WAV")
    with pytest.raises(InvalidAudio, match="silent"):
        decode_reference(out.getvalue(), max_seconds=5)


def test_same_clip_same_id_one_encoder_run(library: tuple[VoiceLibrary, FakeEncoder]) -> None:
    lib, fake = library

    async def scenario() -> list[UploadedVoice]:
        data = encoded(1.0, 22050)
        together = await asyncio.gather(*(lib.upload("a", data) for _ in range(3)))
        again = await lib.upload("b", encoded(1.0, 22050))
        return [*together, again]

    voices = asyncio.run(scenario())
    assert len({v.id for v in voices}) == 1 and voices[0].id.startswith("voice_")
    assert fake.runs == 1
    assert fake.lengths == [16000]  # resampled to the encoder's rate
    assert voices[-1].name == "a"  # the first upload's name stays


def test_list_and_delete_in_process(library: tuple[VoiceLibrary, FakeEncoder]) -> None:
    lib, _ = library

    async def scenario() -> None:
        made = await lib.upload("x", encoded(1.0))
        assert [v.id for v in await lib.list()] == [made.id]
        assert lib.cached(made.id) is made
        await lib.delete(made.id)
        assert await lib.list() == [] and await lib.get(made.id) is None
        with pytest.raises(NotFound):
            await lib.delete(made.id)
        with pytest.raises(InputTooLarge):
            await lib.upload("big", bytes(1_000_001))

    asyncio.run(scenario())


def test_records_round_trip_through_json() -> None:
    voice = UploadedVoice("voice_x", "n", 1.5, np.arange(4, dtype=np.float32), 12.0)
    back = UploadedVoice.from_json(voice.to_json())
    assert (back.id, back.name, back.duration, back.created_at) == ("voice_x", "n", 1.5, 12.0)
    np.testing.assert_array_equal(back.embedding, voice.embedding)


def test_voices_belong_to_the_key_that_uploaded_them(
    library: tuple[VoiceLibrary, FakeEncoder],
) -> None:
    lib, fake = library
    alice, bob = Principal(key_id("alice-key")), Principal(key_id("bob-key"))
    admin = Principal(key_id("admin-key"), admin=True)

    async def scenario() -> None:
        a = await lib.upload("a", encoded(1.0), alice)
        b = await lib.upload("b", encoded(1.0), bob)  # the same clip: a voice of bob's own
        assert a.id != b.id and a.owner == key_id("alice-key") and fake.runs == 2
        assert "alice-key" not in a.to_json()  # the key itself is stored nowhere
        assert [v.id for v in await lib.list(alice)] == [a.id]
        assert [v.id for v in await lib.list(bob)] == [b.id]
        assert {v.id for v in await lib.list(admin)} == {a.id, b.id}
        assert lib.cached(a.id, alice) is a and lib.cached(a.id, bob) is None
        assert await lib.get(a.id, bob) is None and await lib.get(a.id, admin) is a
        with pytest.raises(NotFound):
            await lib.delete(a.id, bob)
        assert lib.cached(a.id, alice) is a  # bob's attempt changed nothing
        await lib.delete(b.id, admin)
        assert await lib.list(bob) == []
        # Made with keys off: once keys are on, only the admin sees it.
        legacy = await lib.upload("old", encoded(1.5))
        assert legacy.owner == "" and legacy.id not in {v.id for v in await lib.list(alice)}
        assert legacy.id in {v.id for v in await lib.list(admin)}
        assert legacy.id in {v.id for v in await lib.list(ANYONE)}

    asyncio.run(scenario())


def test_owner_survives_the_json_record() -> None:
    voice = UploadedVoice("voice_x", "n", 1.5, np.zeros(4, np.float32), 1.0, "abc")
    assert UploadedVoice.from_json(voice.to_json()).owner == "abc"
