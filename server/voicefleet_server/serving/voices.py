"""Voices from reference audio: validate an upload, embed it once, keep it for every replica.

An upload is decoded (wav, flac, mp3, ogg, m4a, webm via FFmpeg), checked (size, length, not
silent), mixed to mono and resampled to the speaker encoder's rate. Its id comes from a
hash of the uploader's key id and the decoded audio, so the same clip uploaded twice by one
key (even re-encoded losslessly) gets the same id and the encoder runs once. A voice
belongs to the key that uploaded it (serving/tenancy.py): other keys neither list nor use
nor delete it. Embeddings live in Redis (`voice:<id>`, no TTL unless `--voice-ttl-s`;
shared by replicas; indexed in `voices` and per owner in `voices:by:<key id>`) behind an
in-process LRU. Without Redis, or while it is down, voices live in this process only and
do not survive a restart.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from math import gcd
from typing import Any

import numpy as np
import redis.asyncio as aioredis

from voicefleet_server.config import ServerSettings
from voicefleet_server.engine.speaker_encoder import SpeakerEncoder
from voicefleet_server.metrics import Metrics
from voicefleet_server.serving.errors import InputTooLarge, InvalidAudio, InvalidInput, NotFound
from voicefleet_server.serving.redis_link import RedisDown, RedisLink
from voicefleet_server.serving.tenancy import SYSTEM, Principal

log = logging.getLogger(__name__)

ID_PREFIX = "voice_"
# Below this peak the clip is silence (or a near-silent recording nobody can clone).
SILENT_PEAK = 1e-3
MIN_SECONDS = 0.5
MAX_NAME_CHARS = 128
# An LRU entry older than this is re-checked against Redis before use, so a voice deleted
# on another replica stops working here within a few seconds.
RECHECK_S = 5.0


@dataclass(frozen=True, slots=True)
class UploadedVoice:
    id: str
    name: str
    duration: float
    embedding: np.ndarray = field(compare=False, repr=False)
    created_at: float = 0.0
    # The key id of the uploader (serving/tenancy.py); "" when made with keys off.
    owner: str = ""
    # What the uploader gave as its consent reference (OpenAI's `consent`: a consent
    # recording id); kept for audit, not verified here.
    consent: str | None = None

    def to_json(self) -> str:
        vector = base64.b64encode(self.embedding.astype("<f4").tobytes()).decode("ascii")
        return json.dumps(
            {
                "id": self.id,
                "name": self.name,
                "duration": self.duration,
                "created_at": self.created_at,
                "owner": self.owner,
                "consent": self.consent,
                "embedding": vector,
            }
        )

    @classmethod
    def from_json(cls, data: str | bytes) -> UploadedVoice:
        raw = json.loads(data)
        vector = np.frombuffer(base64.b64decode(raw["embedding"]), dtype="<f4").astype(np.float32)
        return cls(
            raw["id"],
            raw["name"],
            float(raw["duration"]),
            vector,
            float(raw["created_at"]),
            str(raw.get("owner", "")),
            raw.get("consent"),
        )


def is_voice_id(name: str) -> bool:
    return name.startswith(ID_PREFIX)


# Demuxers an upload may use: the common audio files and phone / browser recordings.
# Anything else FFmpeg could open (video, images, playlists) is refused before decoding.
ACCEPTED_CONTAINERS = frozenset(
    {"wav", "flac", "mp3", "ogg", "aac", "mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm"}
)
ACCEPTED_NAMES = "wav, flac, mp3, ogg/opus, m4a/aac or webm"


def decode_reference(data: bytes, max_seconds: float) -> tuple[np.ndarray, int]:
    """Mono float32 samples and their rate, or `InvalidAudio` saying what is wrong.

    Decoded with FFmpeg (the `av` wheel), stopping as soon as the clip runs past
    `max_seconds`: a small file that decodes to hours of audio is refused early."""
    import av

    if not data:
        raise InvalidAudio("the uploaded file is empty", param="file")
    try:
        container = av.open(io.BytesIO(data), "r")
    except (av.FFmpegError, ValueError, OSError) as exc:
        raise InvalidAudio(
            f"the file is not readable audio; upload {ACCEPTED_NAMES}", param="file"
        ) from exc
    with container:
        audio = container.streams.audio
        if container.format.name not in ACCEPTED_CONTAINERS or not audio:
            raise InvalidAudio(
                f"the file is not readable audio; upload {ACCEPTED_NAMES}", param="file"
            )
        stream = audio[0]
        rate = int(stream.codec_context.sample_rate or 0)
        declared = None if container.duration is None else container.duration / 1_000_000
        if declared is not None and declared > max_seconds + 0.05:
            raise InvalidAudio(
                f"the clip is {declared:.1f} s long; the limit is {max_seconds:g} s",
                param="file",
            )
        # Mono float32 at the clip's own rate, whatever the codec's layout and format.
        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate or None)
        pieces: list[np.ndarray] = []
        count = 0
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    rate = rate or int(out.sample_rate)
                    pieces.append(out.to_ndarray().reshape(-1))
                    count += pieces[-1].size
                if rate and count > max_seconds * rate + rate // 20:
                    raise InvalidAudio(
                        f"the clip is longer than the limit of {max_seconds:g} s", param="file"
                    )
            for out in resampler.resample(None):
                pieces.append(out.to_ndarray().reshape(-1))
        except (av.FFmpegError, ValueError) as exc:
            raise InvalidAudio(f"the audio could not be decoded: {exc}", param="file") from exc
    mono = np.concatenate(pieces).astype(np.float32) if pieces else np.zeros(0, np.float32)
    seconds = len(mono) / rate if rate else 0.0
    if seconds < MIN_SECONDS:
        raise InvalidAudio(
            f"the clip is {seconds:.2f} s long; at least {MIN_SECONDS:g} s of speech is needed",
            param="file",
        )
    if seconds > max_seconds:
        raise InvalidAudio(
            f"the clip is {seconds:.1f} s long; the limit is {max_seconds:g} s", param="file"
        )
    if not np.isfinite(mono).all() or float(np.abs(mono).max()) < SILENT_PEAK:
        raise InvalidAudio("the clip is silent; upload a recording of the voice", param="file")
    return mono, int(rate)


def resample(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    if rate == target:
        return samples
    from scipy.signal import resample_poly

    common = gcd(rate, target)
    return resample_poly(samples, target // common, rate // common).astype(np.float32)


def voice_id(samples: np.ndarray, rate: int, owner: str = "") -> str:
    """Same clip, same owner: same id. The owner is part of it, so two keys uploading one
    clip get two voices (one key's upload never reveals or hands over another's)."""
    salt = f"{owner}\n".encode() if owner else b""
    digest = hashlib.sha256(salt + str(rate).encode() + b"\n" + samples.tobytes()).hexdigest()
    return ID_PREFIX + digest[:24]


class VoiceLibrary:
    """Uploaded voices of this service: upload, look up, list and delete."""

    def __init__(self, settings: ServerSettings, metrics: Metrics, link: RedisLink | None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.link = link
        self.encoder: SpeakerEncoder | None = None
        # In front of Redis: a bounded LRU. Voices made while Redis is absent or down
        # live only here, pinned (never evicted), until the process ends.
        self._lru: OrderedDict[str, UploadedVoice] = OrderedDict()
        self._checked_at: dict[str, float] = {}
        self._pinned: dict[str, UploadedVoice] = {}
        self._pending: dict[str, asyncio.Future[UploadedVoice]] = {}

    # ---- look-ups ----------------------------------------------------------------------

    def cached(self, voice: str, principal: Principal = SYSTEM) -> UploadedVoice | None:
        """The voice if this process holds it now and `principal` may use it (no I/O: the
        synthesis path is sync)."""
        found = self._pinned.get(voice) or self._lru.get(voice)
        if found is not None and voice in self._lru:
            self._lru.move_to_end(voice)
        return found if found is not None and principal.sees(found.owner) else None

    async def get(self, voice: str, principal: Principal = SYSTEM) -> UploadedVoice | None:
        """The voice from the LRU, else from Redis (then remembered), else None; None as
        well when `principal` may not use it (as if it did not exist)."""
        found = await self._fetch(voice)
        return found if found is not None and principal.sees(found.owner) else None

    async def _fetch(self, voice: str) -> UploadedVoice | None:
        found = self.cached(voice)
        if found is not None and voice in self._lru and self._stale(voice):
            exists = await self._redis(lambda client: client.exists(self._key(voice)))
            if exists == 0:  # deleted (or expired) meanwhile; None: Redis is down, keep it
                self._forget(voice)
                return None
            self._checked_at[voice] = time.monotonic()
        if found is not None:
            self.metrics.voice_cache_hits.labels("memory").inc()
            return found
        if not self._shared():
            return None
        data = await self._redis(lambda client: client.get(self._key(voice)))
        if data is None:
            return None
        found = UploadedVoice.from_json(data)
        self.metrics.voice_cache_hits.labels("redis").inc()
        self._remember(found)
        return found

    async def ensure(self, names: list[str]) -> None:
        """Bring every uploaded voice among `names` into this process before synthesis
        (whether the caller may use them is checked by `cached` at synthesis)."""
        for name in dict.fromkeys(names):
            if is_voice_id(name):
                await self._fetch(name)

    async def list(self, principal: Principal = SYSTEM) -> list[UploadedVoice]:
        """The uploaded voices `principal` may see, oldest first."""
        voices: dict[str, UploadedVoice] = dict(self._pinned)
        if self._shared():
            assert self.link is not None
            # A key reads its own index; the admin (and the one tenant of keys-off) all.
            own = principal.key_id is not None and not principal.admin
            index = self._owner_index(principal.owner) if own else self.link.key("voices")
            ids = await self._redis(lambda client: client.smembers(index))
            ids = sorted(i.decode() if isinstance(i, bytes) else str(i) for i in ids or ())
            if ids:
                keys = [self._key(i) for i in ids]
                values = await self._redis(lambda client: client.mget(keys))
                gone = []
                for voice, data in zip(ids, values or [], strict=False):
                    if data is None:
                        gone.append(voice)  # expired (--voice-ttl-s): tidy the index
                    else:
                        voices[voice] = UploadedVoice.from_json(data)
                if gone:
                    await self._redis(lambda client: client.srem(index, *gone))
        else:
            voices.update(self._lru)
        visible = [v for v in voices.values() if principal.sees(v.owner)]
        return sorted(visible, key=lambda v: (v.created_at, v.id))

    async def delete(self, voice: str, principal: Principal = SYSTEM) -> None:
        """Delete a voice `principal` may see; `NotFound` otherwise (as for no voice)."""
        found = await self._fetch(voice)
        if found is not None and not principal.sees(found.owner):
            raise NotFound(f"no uploaded voice {voice!r}", param="voice_id")
        existed = self._pinned.pop(voice, None) is not None
        cached = self._forget(voice)
        if self._shared():
            assert self.link is not None
            # Redis is the truth for shared voices (this LRU may hold a stale copy).
            index = self.link.key("voices")
            removed = await self._redis(lambda client: client.delete(self._key(voice)))
            await self._redis(lambda client: client.srem(index, voice))
            if found is not None and found.owner:
                owned = self._owner_index(found.owner)
                await self._redis(lambda client: client.srem(owned, voice))
            existed = existed or bool(removed)
        else:
            existed = existed or cached
        if not existed:
            raise NotFound(f"no uploaded voice {voice!r}", param="voice_id")

    # ---- upload ------------------------------------------------------------------------

    async def upload(
        self,
        name: str,
        data: bytes,
        principal: Principal = SYSTEM,
        consent: str | None = None,
    ) -> UploadedVoice:
        """A voice owned by `principal` from a reference clip (the same clip again: the
        same voice, embedded once)."""
        encoder = self.encoder
        assert encoder is not None, "the service checks that this model clones voices"
        name = name.strip()
        if not name or len(name) > MAX_NAME_CHARS:
            raise InvalidInput(f"name must be 1 to {MAX_NAME_CHARS} characters", param="name")
        if consent is not None and (not consent.strip() or len(consent) > MAX_NAME_CHARS):
            raise InvalidInput(f"consent must be 1 to {MAX_NAME_CHARS} characters", param="consent")
        if len(data) > self.settings.voice_max_upload_bytes:
            raise InputTooLarge(
                f"the file is {len(data)} bytes; the limit is "
                f"{self.settings.voice_max_upload_bytes} (--voice-max-upload-mb)",
                param="file",
            )
        samples, rate = await asyncio.to_thread(
            decode_reference, data, self.settings.voice_max_seconds
        )
        voice = voice_id(samples, rate, principal.owner)
        existing = await self._fetch(voice)
        if existing is not None:
            return existing
        pending = self._pending.get(voice)
        if pending is not None:  # the same clip is being embedded right now
            return await asyncio.shield(pending)
        future: asyncio.Future[UploadedVoice] = asyncio.get_running_loop().create_future()
        self._pending[voice] = future
        try:
            made = await self._embed(encoder, voice, name, samples, rate, principal.owner, consent)
            future.set_result(made)
            return made
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it, nobody logs it as lost
            raise
        finally:
            del self._pending[voice]

    async def _embed(
        self,
        encoder: SpeakerEncoder,
        voice: str,
        name: str,
        samples: np.ndarray,
        rate: int,
        owner: str,
        consent: str | None,
    ) -> UploadedVoice:
        self.metrics.voice_cache_misses.inc()
        duration = round(len(samples) / rate, 3)

        def run() -> np.ndarray:
            resampled = resample(samples, rate, encoder.sampling_rate)
            started = time.perf_counter()
            vector = encoder.embed(resampled)
            self.metrics.speaker_encoder_duration.observe(time.perf_counter() - started)
            return vector

        embedding = await asyncio.to_thread(run)
        made = UploadedVoice(
            voice, name, duration, embedding, round(time.time(), 3), owner, consent
        )
        await self._store(made)
        return made

    async def _store(self, voice: UploadedVoice) -> None:
        if self._shared():
            try:
                await self._redis_store(voice)
                self._remember(voice)
                return
            except RedisDown:
                pass
        log.info("voice %s kept in this process only (no Redis)", voice.id)
        self._pinned[voice.id] = voice

    async def _redis_store(self, voice: UploadedVoice) -> None:
        assert self.link is not None
        link, ttl = self.link, self.settings.voice_ttl_s or None

        async def op(client: aioredis.Redis) -> None:
            async with client.pipeline(transaction=True) as pipe:
                pipe.set(self._key(voice.id), voice.to_json(), ex=ttl)
                pipe.sadd(link.key("voices"), voice.id)
                if voice.owner:
                    pipe.sadd(self._owner_index(voice.owner), voice.id)
                await pipe.execute()

        await link.call(op)

    # ---- helpers -----------------------------------------------------------------------

    def _shared(self) -> bool:
        return self.link is not None and self.link.up

    def _key(self, voice: str) -> str:
        assert self.link is not None
        return self.link.key("voice", voice)

    def _owner_index(self, owner: str) -> str:
        """The set of one key's voice ids (its listing reads only its own)."""
        assert self.link is not None
        return self.link.key("voices", "by", owner)

    async def _redis(self, op: Any) -> Any:
        """A Redis call; while Redis is down, act as if it held nothing."""
        assert self.link is not None
        try:
            return await self.link.call(op)
        except RedisDown:
            return None

    def _stale(self, voice: str) -> bool:
        return self._shared() and time.monotonic() - self._checked_at.get(voice, 0) > RECHECK_S

    def _remember(self, voice: UploadedVoice) -> None:
        self._lru[voice.id] = voice
        self._lru.move_to_end(voice.id)
        self._checked_at[voice.id] = time.monotonic()
        while len(self._lru) > self.settings.voice_memory_entries:
            old, _ = self._lru.popitem(last=False)
            self._checked_at.pop(old, None)

    def _forget(self, voice: str) -> bool:
        self._checked_at.pop(voice, None)
        return self._lru.pop(voice, None) is not None
