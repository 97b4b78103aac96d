"""The speech service: owns the model's lifecycle and the engine, and turns a validated
speech request into audio, whole or streamed.

Routes hold no logic: they build a `SpeechSpec` and call this object (kept on
`app.state`). It loads the model in the background (so /healthz answers during long
loads), tunes batch limits for the device, warms up, then reports ready.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import enum
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from voicefleet_server.config import ServerSettings
from voicefleet_server.engine.batcher import Engine, EngineStopped, QueueFull
from voicefleet_server.engine.device import GpuMemoryReader, resolve_device, resolve_precision
from voicefleet_server.engine.model import SpeechModel, SynthesisItem, SynthesisTimeout, Voice
from voicefleet_server.engine.scheduler import BatchLimits
from voicefleet_server.engine.segmenter import split_segments
from voicefleet_server.engine.speaker_encoder import SpeakerEncoder
from voicefleet_server.engine.speecht5 import SpeechT5Synthesizer, is_speecht5
from voicefleet_server.engine.tuning import (
    cap_cuda_allocator,
    choose_batch_limit,
    measure_cpu_batching,
    profile_cuda_memory,
    token_budget,
)
from voicefleet_server.engine.vits import OPENAI_VOICES, VitsSynthesizer, openai_voice_index
from voicefleet_server.metrics import Metrics
from voicefleet_server.serving.audio import (
    FORMATS,
    UNSUPPORTED_FORMATS,
    AudioFormat,
    StreamEncoder,
    encode,
    join_with_pauses,
)
from voicefleet_server.serving.errors import (
    InvalidInput,
    Overloaded,
    SynthesisFailed,
    SynthesisTimedOut,
    Unavailable,
    UnknownModel,
    UnknownVoice,
    UnsupportedFormat,
    VoiceCloningUnsupported,
)
from voicefleet_server.serving.voices import UploadedVoice, VoiceLibrary, is_voice_id

log = logging.getLogger(__name__)

# Names OpenAI clients send; all of them mean "the model this pod serves".
OPENAI_MODEL_ALIASES = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts")
SEGMENT_PAUSE_S = 0.08
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# Effectively no padded-token limit: on CPU memory is not the constraint, batch size is.
_UNBOUNDED_TOKENS = 1 << 40


class State(enum.Enum):
    LOADING = "loading"
    READY = "ready"
    DRAINING = "draining"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class SpeechSpec:
    """A speech request as the domain sees it (the API schema has already type-checked it)."""

    model: str
    input: str
    voice: str
    response_format: str = "wav"
    speed: float = 1.0
    stream_format: str | None = None
    seed: int | None = None
    # Test-only (--fault-injection): the X-Voicefleet-Fault header, see engine/faults.py.
    fault: str | None = None


@dataclass(slots=True)
class _Prepared:
    items: list[SynthesisItem]
    media_type: str
    format_name: str
    started: float = field(default_factory=time.monotonic)


class SpeechService:
    def __init__(
        self, settings: ServerSettings, metrics: Metrics, voices: VoiceLibrary | None = None
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.state = State.LOADING
        self.failure: str | None = None
        self.model: VitsSynthesizer | SpeechT5Synthesizer | None = None
        # Uploaded voices (SpeechT5 family only: it has a speaker encoder).
        self.voice_library = voices or VoiceLibrary(settings, metrics, None)
        self.engine: Engine | None = None
        self.batch_measurements: dict[int, float] = {}
        self._memory: GpuMemoryReader | None = None
        self._budget_bytes = 0
        self._inflight = 0
        self._no_inflight = asyncio.Event()
        self._no_inflight.set()
        self._load_task: asyncio.Task[None] | None = None

    # ---- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        self._load_task = asyncio.get_running_loop().create_task(
            self._load(), name="voicefleet-load"
        )

    async def wait_loaded(self) -> None:
        if self._load_task is not None:
            await asyncio.shield(self._load_task)

    async def _load(self) -> None:
        try:
            await asyncio.to_thread(self._load_blocking)
            assert self.engine is not None
            self.engine.start()
            self.state = State.READY
            self.metrics.ready.set(1)
            log.info(
                "ready: max batch %d, padded-token budget %s",
                self.engine.limits.max_batch_size,
                self.engine.limits.max_padded_tokens,
            )
        except Exception as exc:
            self.state = State.FAILED
            self.failure = f"{type(exc).__name__}: {exc}"
            log.exception("model failed to load")

    def _load_blocking(self) -> None:
        settings = self.settings
        device = resolve_device(settings.device)
        precision = resolve_precision(device, settings.dtype)
        self._memory = GpuMemoryReader(device)
        model: VitsSynthesizer | SpeechT5Synthesizer
        if is_speecht5(settings.model, settings.revision):
            model = SpeechT5Synthesizer(
                settings.model, settings.vocoder, precision, settings.revision
            )
            encoder = SpeakerEncoder(settings.speaker_encoder, precision)
            if encoder.embedding_dim != model.embedding_dim:
                raise ValueError(
                    f"speaker encoder {settings.speaker_encoder!r} makes "
                    f"{encoder.embedding_dim}-d embeddings; the model takes {model.embedding_dim}"
                )
            encoder.warm_up()
            self.voice_library.encoder = encoder
        else:
            model = VitsSynthesizer(settings.model, precision, settings.revision)
        model.warm_up()
        max_batch = settings.max_batch_size
        max_tokens = _UNBOUNDED_TOKENS
        if device.startswith("cuda"):
            self._budget_bytes = settings.vram_budget_bytes or self._memory.total_bytes()
            cap_cuda_allocator(device, self._budget_bytes)
            profile = profile_cuda_memory(model, device)
            max_tokens = token_budget(profile, self._budget_bytes)
            if max_tokens <= 0:
                raise RuntimeError(
                    f"the model needs more than the VRAM budget of {self._budget_bytes} bytes"
                )
        elif settings.autotune and max_batch > 1:
            self.batch_measurements = measure_cpu_batching(model, max_batch)
            max_batch = choose_batch_limit(self.batch_measurements, max_batch)
            log.info(
                "CPU batching measured %s audio s/s by batch size; using %d",
                {k: round(v, 2) for k, v in self.batch_measurements.items()},
                max_batch,
            )
        else:
            self._budget_bytes = settings.vram_budget_bytes or 0
        self.metrics.max_batch_size.set(max_batch)
        self.metrics.gpu_memory_budget.set(self._budget_bytes)
        self.model = model
        engine_model: SpeechModel = model
        if settings.fault_injection:
            from voicefleet_server.engine.faults import FaultInjectingModel

            log.warning("fault injection is ON: a test-only setting, never for production")
            engine_model = FaultInjectingModel(model)
        self.engine = Engine(
            model=engine_model,
            limits=BatchLimits(max_batch, max_tokens, settings.batch_window_ms / 1000.0),
            max_queue=settings.max_queue,
            metrics=self.metrics,
            batch_timeout_s=settings.batch_timeout_s,
        )

    def begin_drain(self) -> None:
        if self.state is State.READY:
            self.state = State.DRAINING
        self.metrics.ready.set(0)
        if self.engine is not None:
            self.engine.stop_accepting()

    async def drained(self) -> None:
        """Returns once every accepted request has been answered."""
        await self._no_inflight.wait()
        if self.engine is not None:
            await self.engine.wait_idle()

    async def close(self) -> None:
        if self._load_task is not None and not self._load_task.done():
            self._load_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._load_task
        if self.engine is not None:
            await self.engine.close()

    # ---- health ----------------------------------------------------------------------

    def refresh_gauges(self) -> None:
        if self._memory is not None:
            self.metrics.gpu_memory_used.set(self._memory.used_bytes())
        if self.engine is not None:
            self.metrics.queue_depth.set(self.engine.queue_depth)
            self.metrics.queued_audio_seconds.set(self.engine.queued_audio_seconds)

    def memory_percent(self) -> float | None:
        if self._memory is None or self._budget_bytes <= 0:
            return None
        used = self._memory.used_bytes()
        return None if used == 0 else 100.0 * used / self._budget_bytes

    def worker_stuck_s(self) -> float:
        """How long a model call abandoned after its batch deadline has been stuck since."""
        return 0.0 if self.engine is None else self.engine.stuck_for_s()

    def live(self) -> bool:
        """False once a stuck model call has outlived a second batch deadline: the process
        cannot free that thread, so the liveness probe asks Kubernetes for a restart."""
        timeout = self.settings.batch_timeout_s
        return self.state is not State.FAILED and not (
            timeout > 0 and self.worker_stuck_s() > timeout
        )

    def readiness(self) -> tuple[bool, dict[str, object]]:
        memory = self.memory_percent()
        over_watermark = memory is not None and memory > self.settings.vram_watermark_percent
        ready = self.state is State.READY and not over_watermark and self.live()
        detail: dict[str, object] = {"state": self.state.value, "model": self.settings.model}
        if self.failure:
            detail["error"] = self.failure
        if memory is not None:
            detail["gpu_memory_percent"] = round(memory, 1)
            detail["over_watermark"] = over_watermark
        if self.engine is not None:
            detail["queue_depth"] = self.engine.queue_depth
            detail["max_batch_size"] = self.engine.limits.max_batch_size
            stuck = self.worker_stuck_s()
            if stuck > 0:
                detail["worker_stuck_s"] = round(stuck, 1)
        return ready, detail

    # ---- catalogue -------------------------------------------------------------------

    @property
    def model_name(self) -> str:
        return self.model.name if self.model is not None else self.settings.model

    def voices(self) -> list[dict[str, object]]:
        model = self._require_model()
        speakers = len(model.voices)
        return [
            {
                "id": voice.id,
                "name": voice.name,
                "model": model.name,
                "aliases": [
                    n
                    for n in OPENAI_VOICES
                    if openai_voice_index(n, speakers) == voice.speaker_index
                ],
            }
            for voice in model.voices
        ]

    @property
    def model_family(self) -> str:
        """Batches are formed per family (the engine's `group`)."""
        return self._require_model().family

    @property
    def clones_voices(self) -> bool:
        return self.voice_library.encoder is not None

    async def catalogue(self) -> list[dict[str, object]]:
        """Built-in voices, then uploaded ones (when this model clones voices)."""
        listed = [{**v, "type": "builtin"} for v in self.voices()]
        if self.clones_voices:
            listed += [self._card(v) for v in await self.voice_library.list()]
        return listed

    def _card(self, voice: UploadedVoice) -> dict[str, object]:
        return {
            "id": voice.id,
            "name": voice.name,
            "model": self.model_name,
            "type": "uploaded",
            "duration": voice.duration,
            "created_at": int(voice.created_at),
        }

    def _require_cloning(self) -> VoiceLibrary:
        model = self._require_model()
        if not self.clones_voices:
            raise VoiceCloningUnsupported(
                f"the loaded model {model.name!r} ({model.family}) cannot clone voices from "
                "reference audio; serve a SpeechT5 checkpoint to upload voices"
            )
        return self.voice_library

    async def upload_voice(self, name: str, data: bytes) -> dict[str, object]:
        voice = await self._require_cloning().upload(name, data)
        return self._card(voice)

    async def delete_voice(self, voice_id: str) -> None:
        if any(v.id == voice_id for v in self._require_model().voices):
            raise InvalidInput(f"{voice_id!r} is a built-in voice; it cannot be deleted")
        await self._require_cloning().delete(voice_id)

    async def ensure_voices(self, *names: str) -> None:
        """Fetch the uploaded voices among `names` (from Redis) so synthesis finds them."""
        if self.clones_voices:
            await self.voice_library.ensure(list(names))

    def _require_model(self) -> VitsSynthesizer | SpeechT5Synthesizer:
        if self.state is State.FAILED:
            raise Unavailable(f"the model failed to load: {self.failure}", retry_after_s=30)
        if self.model is None or self.engine is None:
            raise Unavailable("the model is still loading", retry_after_s=5)
        return self.model

    def _voice(self, model: VitsSynthesizer | SpeechT5Synthesizer, name: str) -> Voice:
        for voice in model.voices:
            if voice.id == name:
                return voice
        index = openai_voice_index(name, len(model.voices))
        if index is not None:
            return model.voices[index]
        if is_voice_id(name):
            if not self.clones_voices:
                raise UnknownVoice(
                    f"{name!r} is an uploaded voice; the loaded model ({model.family}) "
                    "cannot use uploaded voices",
                    param="voice",
                )
            uploaded = self.voice_library.cached(name)
            if uploaded is None:
                raise UnknownVoice(f"no uploaded voice {name!r} (deleted?)", param="voice")
            return Voice(uploaded.id, uploaded.name, 0, embedding=uploaded.embedding)
        known = ", ".join([v.id for v in model.voices] + list(OPENAI_VOICES))
        raise UnknownVoice(f"unknown voice {name!r}; this model offers: {known}", param="voice")

    # ---- synthesis -------------------------------------------------------------------

    def check_target(self, model_id: str, response_format: str) -> AudioFormat:
        """Refuse a model this pod does not serve or a format it cannot write."""
        model = self._require_model()
        if model_id not in {model.name, self.settings.model, *OPENAI_MODEL_ALIASES}:
            raise UnknownModel(
                f"model {model_id!r} is not served here; use {model.name!r}", param="model"
            )
        if response_format in UNSUPPORTED_FORMATS:
            raise UnsupportedFormat(UNSUPPORTED_FORMATS[response_format], param="response_format")
        fmt = FORMATS.get(response_format)
        if fmt is None:
            raise UnsupportedFormat(
                f"unknown response_format {response_format!r}; use one of {', '.join(FORMATS)}",
                param="response_format",
            )
        return fmt

    def resolve_voice(self, name: str, param: str = "voice") -> Voice:
        try:
            return self._voice(self._require_model(), name)
        except UnknownVoice as exc:
            raise UnknownVoice(exc.message, param=param) from exc

    def tokenize(self, text: str) -> list[int]:
        return self._require_model().tokenize(text)

    @property
    def sampling_rate(self) -> int:
        return self._rate()

    def _prepare(self, spec: SpeechSpec) -> _Prepared:
        model = self._require_model()
        fmt = self.check_target(spec.model, spec.response_format)
        voice = self._voice(model, spec.voice)
        text = _CONTROL_CHARS.sub(" ", spec.input).strip()
        if not text:
            raise InvalidInput("input is empty", param="input")
        if len(spec.input) > self.settings.max_input_chars:
            raise InvalidInput(
                f"input is {len(spec.input)} characters; the limit is "
                f"{self.settings.max_input_chars} (use /v1/audio/jobs for long texts)",
                param="input",
            )
        fault = None if spec.fault is None else _parse_fault(spec.fault)
        items = []
        for index, segment in enumerate(split_segments(text)):
            tokens = model.tokenize(segment)
            if tokens:
                seed = None if spec.seed is None else (spec.seed * 1_000_003 + index) % (1 << 63)
                items.append(
                    SynthesisItem(
                        tokens,
                        voice.speaker_index,
                        spec.speed,
                        seed,
                        speaker_embedding=voice.embedding,
                        fault=fault,
                    )
                )
        if not items:
            raise InvalidInput("input contains nothing this model can pronounce", param="input")
        media_type = "text/event-stream" if spec.stream_format == "sse" else fmt.media_type
        return _Prepared(items, media_type, fmt.name)

    def _submit(self, prepared: _Prepared) -> list[asyncio.Future[np.ndarray]]:
        assert self.engine is not None
        try:
            return self.engine.submit(prepared.items, group=self.model_family)
        except QueueFull as exc:
            raise Overloaded(
                "the server is at capacity; retry after the indicated delay", exc.retry_after_s
            ) from exc
        except EngineStopped as exc:
            raise Unavailable(str(exc), retry_after_s=5) from exc

    async def speak(self, spec: SpeechSpec) -> tuple[bytes, str]:
        """Render the whole request and return (file bytes, media type)."""
        if self.state is State.DRAINING:
            raise Unavailable("the server is draining", retry_after_s=5)
        prepared = self._prepare(spec)
        futures = self._submit(prepared)
        async with self._tracked():
            try:
                waves = await asyncio.gather(*futures)
            except SynthesisTimeout as exc:
                self._abandon(futures)
                raise SynthesisTimedOut(f"synthesis timed out: {exc}") from exc
            except Exception as exc:
                self._abandon(futures)
                raise SynthesisFailed(f"synthesis failed: {exc}") from exc
            except asyncio.CancelledError:
                self._abandon(futures)
                raise
            audio = join_with_pauses(waves, int(SEGMENT_PAUSE_S * self._rate()))
            body = await asyncio.to_thread(
                encode, audio, self._rate(), FORMATS[prepared.format_name]
            )
        self._observe(prepared, audio, first_audio_at=time.monotonic())
        return body, prepared.media_type

    def stream(self, spec: SpeechSpec) -> tuple[AsyncIterator[bytes], str]:
        """Admit the request now (so overload is a 429, not a broken stream) and return
        an iterator of encoded chunks (raw bytes, or SSE events) in input order."""
        if self.state is State.DRAINING:
            raise Unavailable("the server is draining", retry_after_s=5)
        prepared = self._prepare(spec)
        futures = self._submit(prepared)
        return self._chunks(prepared, futures, sse=spec.stream_format == "sse"), prepared.media_type

    async def _chunks(
        self, prepared: _Prepared, futures: list[asyncio.Future[np.ndarray]], *, sse: bool
    ) -> AsyncIterator[bytes]:
        encoder = StreamEncoder(FORMATS[prepared.format_name], self._rate())
        pause = np.zeros(int(SEGMENT_PAUSE_S * self._rate()), dtype=np.float32)
        produced: list[np.ndarray] = []
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
                    yield _sse(
                        {"type": "speech.audio.done", "usage": {"audio_seconds": round(seconds, 3)}}
                    )
                self._observe(
                    prepared, np.concatenate(produced), first_audio_at or time.monotonic()
                )
            finally:
                self._abandon(futures)

    # ---- helpers ---------------------------------------------------------------------

    def _rate(self) -> int:
        assert self.model is not None
        return self.model.sampling_rate

    def _abandon(self, futures: Sequence[asyncio.Future[np.ndarray]]) -> None:
        pending = [f for f in futures if not f.done()]
        if pending and self.engine is not None:
            self.engine.cancel(pending)

    def _observe(self, prepared: _Prepared, audio: np.ndarray, first_audio_at: float) -> None:
        now = time.monotonic()
        elapsed = now - prepared.started
        self.metrics.request_duration.labels("speech").observe(elapsed)
        self.metrics.time_to_first_audio.labels("speech").observe(first_audio_at - prepared.started)
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


def _parse_fault(value: str) -> str:
    from voicefleet_server.engine.faults import parse_fault

    try:
        return parse_fault(value)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from exc


def _sse(event: dict[str, object]) -> bytes:
    return f"data: {json.dumps(event)}\n\n".encode()


def _sse_delta(chunk: bytes) -> bytes:
    return _sse({"type": "speech.audio.delta", "audio": base64.b64encode(chunk).decode("ascii")})
