"""The speech service: turns a validated speech request into audio, whole or streamed.

Routes hold no logic: they build a `SpeechSpec` and call this object. The model, its
voices and the engine belong to the `ModelRuntime` it is given; whole-file answers go
through the `ResultCache` first. It tracks the requests it is answering so a draining
pod can wait for them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace

import numpy as np

from voicefleet_server.config import ServerSettings
from voicefleet_server.engine.model import SynthesisItem, SynthesisTimeout
from voicefleet_server.engine.timestamps import WordTime, word_times
from voicefleet_server.metrics import Metrics
from voicefleet_server.serving.audio import (
    FORMATS,
    UNSUPPORTED_FORMATS,
    AudioFormat,
    StreamEncoder,
    encode,
    join_with_pauses,
)
from voicefleet_server.serving.cache import ResultCache
from voicefleet_server.serving.contentpolicy import ContentPolicy
from voicefleet_server.serving.errors import (
    ContentPolicyViolation,
    InvalidInput,
    SynthesisFailed,
    SynthesisTimedOut,
    Unavailable,
    UnsupportedFormat,
)
from voicefleet_server.serving.runtime import ModelRuntime, TimedItems, parse_fault
from voicefleet_server.serving.specs import SpeechSpec

log = logging.getLogger(__name__)

SEGMENT_PAUSE_S = 0.08


def check_target(runtime: ModelRuntime, model_id: str, response_format: str) -> AudioFormat:
    """Refuse a model this pod does not serve or a format it cannot write."""
    runtime.check_model(model_id)
    if response_format in UNSUPPORTED_FORMATS:
        raise UnsupportedFormat(UNSUPPORTED_FORMATS[response_format], param="response_format")
    fmt = FORMATS.get(response_format)
    if fmt is None:
        raise UnsupportedFormat(
            f"unknown response_format {response_format!r}; use one of {', '.join(FORMATS)}",
            param="response_format",
        )
    return fmt


@dataclass(slots=True)
class _Prepared:
    items: list[SynthesisItem]
    media_type: str
    format_name: str
    route: str
    # With word timestamps: the input's words and each item's token -> word map.
    timed: TimedItems | None = None
    started: float = field(default_factory=time.monotonic)


@dataclass(frozen=True, slots=True)
class Captioned:
    """A whole rendered answer with its word timestamps."""

    audio: bytes
    format: str
    timestamps: list[dict[str, object]]


class SpeechService:
    def __init__(
        self,
        settings: ServerSettings,
        metrics: Metrics,
        runtime: ModelRuntime,
        cache: ResultCache | None = None,
        policy: ContentPolicy | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.runtime = runtime
        self.cache = cache
        self.policy = policy
        self._inflight = 0
        self._no_inflight = asyncio.Event()
        self._no_inflight.set()

    # ---- draining --------------------------------------------------------------------

    def begin_drain(self) -> None:
        self.runtime.begin_drain()

    async def drained(self) -> None:
        """Returns once every accepted request has been answered."""
        await self._no_inflight.wait()
        await self.runtime.drained()

    # ---- synthesis -------------------------------------------------------------------

    async def _prepare(self, spec: SpeechSpec) -> _Prepared:
        if self.runtime.draining:
            raise Unavailable("the server is draining", retry_after_s=5)
        fmt = check_target(self.runtime, spec.model, spec.response_format)
        if len(spec.input) > self.settings.max_input_chars:
            raise InvalidInput(
                f"input is {len(spec.input)} characters; the limit is "
                f"{self.settings.max_input_chars} (use /v1/audio/jobs for long texts)",
                param="input",
            )
        check_policy(self.policy, self.metrics, spec.input, spec.route)
        voice = self.runtime.resolve_voice(spec.voice, principal=spec.principal)
        fault = None if spec.fault is None else parse_fault(spec.fault)
        timed = None
        if spec.timestamps:
            # The same segments and items, plus the word alignment (one text pass).
            timed = await self.runtime.timed_items(
                spec.input, voice, speed=spec.speed, seed=spec.seed, fault=fault
            )
            items = timed.items
        else:
            segments = await self.runtime.segments(spec.input, speed=spec.speed)
            if not segments:
                raise InvalidInput("input is empty", param="input")
            items = await self.runtime.items(
                segments, voice, speed=spec.speed, seed=spec.seed, fault=fault
            )
        if not items:
            raise InvalidInput("input contains nothing this model can pronounce", param="input")
        media_type = "text/event-stream" if spec.stream_format == "sse" else fmt.media_type
        return _Prepared(items, media_type, fmt.name, spec.route, timed)

    async def speak(self, spec: SpeechSpec) -> tuple[bytes, str]:
        """Render the whole request (or answer it from the cache): (file bytes, media type)."""
        await self.runtime.ensure_voices(spec.voice)
        if self.cache is None:
            return await self._render(spec)
        return await self.cache.speak(spec, self._render)

    async def captioned(self, spec: SpeechSpec) -> Captioned:
        """The whole audio with its word timestamps (never cached: cheap to keep honest)."""
        await self.runtime.ensure_voices(spec.voice)
        prepared = await self._prepare(replace(spec, timestamps=True))
        audio, waves = await self._whole(prepared)
        body = await asyncio.to_thread(encode, audio, self._rate(), FORMATS[prepared.format_name])
        assert prepared.timed is not None
        clock = _WordClock(prepared.timed, self._rate(), self._pause_samples())
        for index, (item, wave) in enumerate(zip(prepared.items, waves, strict=True)):
            clock.add(index, item, len(wave))
        return Captioned(body, prepared.format_name, clock.take(len(prepared.items)))

    async def _render(self, spec: SpeechSpec) -> tuple[bytes, str]:
        prepared = await self._prepare(spec)
        audio, _ = await self._whole(prepared)
        body = await asyncio.to_thread(encode, audio, self._rate(), FORMATS[prepared.format_name])
        return body, prepared.media_type

    async def _whole(self, prepared: _Prepared) -> tuple[np.ndarray, list[np.ndarray]]:
        """Render every item; the joined audio and each item's waveform."""
        futures = self.runtime.submit(prepared.items)
        async with self._tracked():
            try:
                waves = list(await asyncio.gather(*futures))
            except SynthesisTimeout as exc:
                self._abandon(futures)
                raise SynthesisTimedOut(f"synthesis timed out: {exc}") from exc
            except Exception as exc:
                self._abandon(futures)
                raise SynthesisFailed(f"synthesis failed: {exc}") from exc
            except asyncio.CancelledError:
                self._abandon(futures)
                raise
            audio = join_with_pauses(waves, self._pause_samples())
        self._observe(prepared, audio, first_audio_at=time.monotonic())
        return audio, waves

    async def stream(self, spec: SpeechSpec) -> tuple[AsyncIterator[bytes], str]:
        """Admit the request now (so overload is a 429, not a broken stream) and return
        an iterator of encoded chunks (raw bytes, or SSE events) in input order."""
        await self.runtime.ensure_voices(spec.voice)
        prepared = await self._prepare(spec)
        futures = self.runtime.submit(prepared.items)
        return self._chunks(prepared, futures, sse=spec.stream_format == "sse"), prepared.media_type

    async def _chunks(
        self, prepared: _Prepared, futures: list[asyncio.Future[np.ndarray]], *, sse: bool
    ) -> AsyncIterator[bytes]:
        encoder = StreamEncoder(FORMATS[prepared.format_name], self._rate())
        pause = np.zeros(self._pause_samples(), dtype=np.float32)
        clock = None
        if prepared.timed is not None:
            clock = _WordClock(prepared.timed, self._rate(), len(pause))
        produced: list[np.ndarray] = []
        generated = 0
        first_audio_at: float | None = None
        async with self._tracked():
            try:
                for index, future in enumerate(futures):
                    try:
                        wave = await future
                    except Exception as exc:
                        log.warning("stream aborted: segment %d failed: %s", index, exc)
                        if sse:
                            yield _sse(
                                {
                                    "type": "error",
                                    "error": {
                                        "message": f"synthesis failed: {exc}",
                                        "type": "server_error",
                                        "code": "synthesis_failed",
                                    },
                                }
                            )
                            return
                        raise
                    if clock is not None:
                        # This segment's words (those ending in it) before its audio.
                        clock.add(index, prepared.items[index], len(wave))
                        yield _sse(
                            {"type": "speech.audio.timestamps", "timestamps": clock.take(index)}
                        )
                    generated += len(wave)
                    piece = wave if index == 0 else np.concatenate([pause, wave])
                    produced.append(piece)
                    chunk = encoder.feed(piece)
                    if chunk:
                        first_audio_at = first_audio_at or time.monotonic()
                        yield _sse_delta(chunk) if sse else chunk
                tail = encoder.finish()
                if tail:
                    first_audio_at = first_audio_at or time.monotonic()
                    if not sse:
                        yield tail
                    else:
                        yield _sse_delta(tail)
                if sse:
                    seconds = sum(len(p) for p in produced) / self._rate()
                    usage = self._usage(prepared, seconds, generated)
                    yield _sse({"type": "speech.audio.done", "usage": usage})
                self._observe(
                    prepared, np.concatenate(produced), first_audio_at or time.monotonic()
                )
            finally:
                self._abandon(futures)

    def _usage(self, prepared: _Prepared, seconds: float, generated: int) -> dict[str, object]:
        """OpenAI's usage for a TTS model: input tokens are the model's input tokens (what
        its text encoder read: characters and blanks for MMS, phoneme ids for Piper, text
        pieces for SpeechT5), output tokens the acoustic frames it generated (one per
        `frame_samples` of audio, pauses between segments not counted); plus the audio's
        length. See README "Usage"."""
        model = self.runtime.model()
        frame = max(1, model.frame_samples)
        inputs = sum(len(item.token_ids) for item in prepared.items)
        outputs = -(-generated // frame)
        return {
            "input_tokens": inputs,
            "output_tokens": outputs,
            "total_tokens": inputs + outputs,
            "audio_seconds": round(seconds, 3),
        }

    # ---- helpers ---------------------------------------------------------------------

    def _rate(self) -> int:
        return self.runtime.sampling_rate

    def _pause_samples(self) -> int:
        return int(SEGMENT_PAUSE_S * self._rate())

    def _abandon(self, futures: list[asyncio.Future[np.ndarray]]) -> None:
        self.runtime.cancel(futures)

    def _observe(self, prepared: _Prepared, audio: np.ndarray, first_audio_at: float) -> None:
        now = time.monotonic()
        elapsed = now - prepared.started
        self.metrics.request_duration.labels(prepared.route).observe(elapsed)
        self.metrics.time_to_first_audio.labels(prepared.route).observe(
            first_audio_at - prepared.started
        )
        seconds = len(audio) / self._rate()
        if seconds > 0:
            self.metrics.real_time_factor.observe(elapsed / seconds)

    @contextlib.asynccontextmanager
    async def _tracked(self) -> AsyncIterator[None]:
        self._inflight += 1
        self._no_inflight.clear()
        self.metrics.inflight_requests.set(self._inflight)
        try:
            yield
        finally:
            self._inflight -= 1
            self.metrics.inflight_requests.set(self._inflight)
            if self._inflight == 0:
                self._no_inflight.set()


def check_policy(policy: ContentPolicy | None, metrics: Metrics, text: str, route: str) -> None:
    """400 content_policy_violation (naming no term) when `text` holds a blocked term."""
    if policy is not None and policy.blocks(text):
        metrics.content_policy_rejections.labels(route).inc()
        raise ContentPolicyViolation()


class _WordClock:
    """Word timestamps of a rendered request, segment by segment: each item's token
    durations placed at the item's position in the whole audio (segments are joined with
    a pause). A word is told with the segment holding its last token."""

    def __init__(self, timed: TimedItems, rate: int, pause_samples: int) -> None:
        self._timed = timed
        self._rate = rate
        self._pause = pause_samples
        self._offset = 0
        self._times: dict[int, tuple[float, float]] = {}
        self._told: set[int] = set()
        self._last: dict[int, int] = {}
        for index, owners in enumerate(timed.owners):
            for word in owners:
                if word >= 0:
                    self._last[word] = index

    def add(self, index: int, item: SynthesisItem, samples: int) -> None:
        """Item `index` rendered `samples` samples (it follows the items before it)."""
        start = self._offset + (self._pause if index else 0)
        if item.token_samples is not None:
            found = word_times(
                self._timed.words,
                self._timed.owners[index],
                item.token_samples,
                self._timed.silent,
                self._timed.breaks,
                item.token_ids,
                self._rate,
                start,
            )
            for word, (begin, end) in found.items():
                known = self._times.get(word)
                self._times[word] = (
                    (begin, end) if known is None else (min(known[0], begin), max(known[1], end))
                )
        self._offset = start + samples

    def take(self, index: int) -> list[dict[str, object]]:
        """Words not told yet whose last token lies in item `index` or before, in order."""
        ready = sorted(
            w for w in self._times if w not in self._told and self._last.get(w, -1) <= index
        )
        self._told.update(ready)
        return [WordTime(self._timed.words[w], *self._times[w]).as_dict() for w in ready]


def _sse(event: dict[str, object]) -> bytes:
    return f"data: {json.dumps(event)}\n\n".encode()


def _sse_delta(chunk: bytes) -> bytes:
    return _sse({"type": "speech.audio.delta", "audio": base64.b64encode(chunk).decode("ascii")})
