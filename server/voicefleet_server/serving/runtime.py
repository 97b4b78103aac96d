"""The model runtime: the loaded model and everything that depends on which model it is.

`ModelRuntime` owns the model's lifecycle (load in the background so /healthz answers
during long loads, tune batch limits for the device, warm up; state loading -> ready ->
draining, or failed), the engine, health readings, and voice resolution (built-in voices,
OpenAI's names, uploaded voices). Every request reaches the model through two doors:

- `segments` + `items` (together `text_to_items`): the ONE place text becomes schedulable
  items. Speech requests and jobs both go through it; see the section comment below for
  where normalization, vocabulary checks and other tokenizers plug in.
- `submit`: queue items on the engine; a full queue becomes `Overloaded` (429) and a
  stopped engine `Unavailable` (503), so callers never see engine exceptions.

SpeechService, JobService and the ResultCache take one in their constructors. Above this
module only the model-family interface (engine/model.py `SpeechModel`) is visible.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import enum
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Final

import numpy as np

from voicefleet_server.coldstart import resume_collector
from voicefleet_server.config import ServerSettings
from voicefleet_server.engine import faults, shapes
from voicefleet_server.engine.batcher import Engine, EngineStopped, QueueFull
from voicefleet_server.engine.cpu import (
    call_thread_counts,
    fit_threads_to_quota,
    model_workers,
    on_passing_thread,
)
from voicefleet_server.engine.device import GpuMemoryReader, resolve_device, resolve_precision
from voicefleet_server.engine.families import load_family
from voicefleet_server.engine.model import SpeechModel, SynthesisItem, TextProfile, Voice
from voicefleet_server.engine.scheduler import BatchLimits
from voicefleet_server.engine.segmenter import DEFAULT_CHARS_PER_SECOND, segment_chars
from voicefleet_server.engine.text import normalize, resolve_language
from voicefleet_server.engine.textprep import PreparedText, UnspeakableText, prepare_text
from voicefleet_server.engine.timestamps import WordPlan, plan_words, token_owners
from voicefleet_server.engine.tuning import (
    TuningReport,
    cap_cuda_allocator,
    profile_cuda_memory,
    request_share,
    token_budget,
    tune_cpu,
    wants_precision_tuning,
)
from voicefleet_server.metrics import Metrics
from voicefleet_server.serving import requestid
from voicefleet_server.serving.errors import (
    InvalidInput,
    Overloaded,
    TimestampsUnsupported,
    Unavailable,
    UnknownModel,
    UnknownVoice,
    UnsupportedCharacters,
    VoiceCloningUnsupported,
)
from voicefleet_server.serving.quality import QualityMonitor
from voicefleet_server.serving.tenancy import Principal
from voicefleet_server.serving.voices import UploadedVoice, VoiceLibrary, is_voice_id

log = logging.getLogger(__name__)

# Names OpenAI clients send; all of them mean "the model this pod serves".
OPENAI_MODEL_ALIASES = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts")
# OpenAI's voice names; they map onto the model's voices in this order (modulo their count).
OPENAI_VOICES = (
    "alloy",
    "ash",
    "ballad",
    "coral",
    "echo",
    "fable",
    "nova",
    "onyx",
    "sage",
    "shimmer",
    "verse",
    "marin",
    "cedar",
)
# The test-only request header read when --fault-injection is on (engine/faults.py).
FAULT_HEADER: Final = faults.FAULT_HEADER
# Control characters other than tab and newline (newlines carry dialogue turns).
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# Effectively no padded-token limit: on CPU memory is not the constraint, batch size is.
_UNBOUNDED_TOKENS = 1 << 40


class State(enum.Enum):
    LOADING = "loading"
    READY = "ready"
    DRAINING = "draining"
    FAILED = "failed"


def openai_voice_index(voice: str, count: int) -> int | None:
    """OpenAI's voice names map onto a model's `count` voices in a fixed order."""
    if voice not in OPENAI_VOICES:
        return None
    return OPENAI_VOICES.index(voice) % max(count, 1)


def clean_text(text: str) -> str:
    """Control characters (other than tab and newline) become spaces."""
    return _CONTROL_CHARS.sub(" ", text)


def segment_seed(seed: int | None, index: int) -> int | None:
    """The seed of a request's segment `index`: distinct per segment, fixed by the request's
    seed, so a job chunk rendered again (on any replica) sounds the same."""
    return None if seed is None else (seed * 1_000_003 + index) % (1 << 63)


def parse_fault(value: str) -> str:
    """A validated fault-injection header value (test-only), or InvalidInput."""
    try:
        return faults.parse_fault(value)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from exc


class ModelRuntime:
    def __init__(self, settings: ServerSettings, metrics: Metrics, voices: VoiceLibrary) -> None:
        self.settings = settings
        self.metrics = metrics
        self.state = State.LOADING
        self.failure: str | None = None
        # Uploaded voices (families with a speaker encoder only: SpeechT5).
        self.voice_library = voices
        self._model: SpeechModel | None = None
        self._text_profile: TextProfile | None = None
        self._engine: Engine | None = None
        self._memory: GpuMemoryReader | None = None
        self._budget_bytes = 0
        self._load_task: asyncio.Task[None] | None = None
        # CPU tuning runs after ready, in the engine's idle gaps (engine/tuning.py).
        self.tuning = TuningReport()
        self._tune_precision = False
        self._tuning_task: asyncio.Task[TuningReport] | None = None
        # Tokenization runs here: off the event loop (a phonemizer can take milliseconds) and
        # off the engine's worker (which must only run model calls). One thread, because
        # tokenizers and espeak-ng are not safe to call from several threads at once.
        self._text_thread = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="voicefleet-text"
        )
        # Sentence splitting and normalization (pure Python, safe side by side) run on a
        # few threads of their own: a one-liner's few milliseconds then share the CPU with
        # a long text's preparation (30-60 ms for the vs-Piper bench's ten sentences)
        # instead of queueing behind it on the text thread.
        self._prep_threads = concurrent.futures.ThreadPoolExecutor(
            max_workers=4, thread_name_prefix="voicefleet-prep"
        )
        # Every returned segment's audio is checked (off the loop, never in the way).
        self._quality = QualityMonitor(settings.quality_limits, metrics)

    # ---- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        self._load_task = asyncio.get_running_loop().create_task(
            self._load(), name="voicefleet-load"
        )

    async def _load(self) -> None:
        try:
            try:
                await on_passing_thread(self._load_blocking)
            finally:
                resume_collector()
            assert self._engine is not None
            self._engine.start()
            self.state = State.READY
            self.metrics.ready.set(1)
            log.info(
                "ready: max batch %d, padded-token budget %s, request share %d; tuning %s",
                self._engine.limits.max_batch_size,
                self._engine.limits.max_padded_tokens,
                self._engine.limits.request_share,
                self.tuning.state,
            )
            if self.tuning.state == "pending":
                assert self._model is not None
                self._tuning_task = asyncio.get_running_loop().create_task(
                    tune_cpu(
                        self._engine,
                        self._model,
                        tune_precision=self._tune_precision,
                        ceiling=self.settings.max_batch_size,
                        report=self.tuning,
                    ),
                    name="voicefleet-tuning",
                )
        except Exception as exc:
            self.state = State.FAILED
            self.failure = f"{type(exc).__name__}: {exc}"
            log.exception("model failed to load")

    def _load_blocking(self) -> None:
        settings = self.settings
        device = resolve_device(settings.device)
        cores = 1 if device.startswith("cuda") else fit_threads_to_quota()
        precision = resolve_precision(device, settings.dtype)
        self.metrics.set_precision(precision.label)
        self._memory = GpuMemoryReader(device)
        # GPU series on /metrics (absent on CPU), read from NVML at scrape time.
        self.metrics.gpu.read = self._memory.report
        family = load_family(
            settings.model,
            precision,
            revision=settings.revision,
            vocoder=settings.vocoder,
            speaker_encoder=settings.speaker_encoder,
        )
        self.voice_library.encoder = family.encoder
        model = family.model
        workers = 1 if device.startswith("cuda") else model_workers(settings.model_workers, cores)
        module = getattr(model, "model", None)
        if not device.startswith("cuda") and module is not None:
            # Before the model's first call: oneDNN reads it when it builds its first kernel.
            threads = len(call_thread_counts(cores, workers))
            shapes.size_kernel_cache(shapes.kernel_cache_capacity(module, threads))
        model.warm_up()
        self._tune_precision = settings.autotune and wants_precision_tuning(
            device, settings.dtype, model
        )
        limits = self._tune(model, device)
        self.metrics.max_batch_size.set(limits.max_batch_size)
        self.metrics.gpu_memory_budget.set(self._budget_bytes)
        engine_model: SpeechModel = model
        if settings.fault_injection:
            log.warning("fault injection is ON: a test-only setting, never for production")
            engine_model = faults.FaultInjectingModel(model)
        self._model = model
        profile = self._text_profile = self._profile(model)
        log.info(
            "text: language %s, %s, %s",
            profile.language or "unknown (numbers and abbreviations left as written)",
            "the model reads numbers itself" if profile.reads_numbers else "normalized here",
            "no vocabulary check"
            if profile.vocabulary is None
            else f"vocabulary of {len(profile.vocabulary)} characters",
        )
        self._engine = Engine(
            model=engine_model,
            limits=limits,
            max_queue=settings.max_queue,
            metrics=self.metrics,
            batch_timeout_s=settings.batch_timeout_s,
            workers=workers,
            worker_nice=settings.model_worker_nice,
        )

    def _tune(self, model: SpeechModel, device: str) -> BatchLimits:
        """Batch limits to start with. CUDA: a padded-token budget from profiled memory and
        the request share from the probes' timings, before ready. CPU: batch 1 (float32)
        until tuning, which runs after ready in idle gaps, measures whether batching or
        bf16 pay (start-up stays bounded: bench/RESULTS.md, cold start)."""
        settings = self.settings
        max_batch = settings.max_batch_size
        max_tokens = _UNBOUNDED_TOKENS
        share = 1
        if device.startswith("cuda"):
            assert self._memory is not None
            self._budget_bytes = settings.vram_budget_bytes or self._memory.total_bytes()
            cap_cuda_allocator(device, self._budget_bytes)
            profile = profile_cuda_memory(model, device)
            max_tokens = token_budget(profile, self._budget_bytes)
            if max_tokens <= 0:
                raise RuntimeError(
                    f"the model needs more than the VRAM budget of {self._budget_bytes} bytes"
                )
            share = min(max_batch, request_share(profile.seconds_by_batch))
            self.tuning.state = "off"
            self.tuning.batching = {
                "seconds_by_batch": {b: round(t, 4) for b, t in profile.seconds_by_batch.items()},
                "request_share": share,
            }
        else:
            self._budget_bytes = settings.vram_budget_bytes or 0
            if settings.autotune and (max_batch > 1 or self._tune_precision):
                max_batch = 1
            else:
                self.tuning.state = "off"
        return BatchLimits(
            max_batch, max_tokens, settings.batch_window_ms / 1000.0, request_share=share
        )

    @property
    def draining(self) -> bool:
        return self.state is State.DRAINING

    def begin_drain(self) -> None:
        if self.state is State.READY:
            self.state = State.DRAINING
        self.metrics.ready.set(0)
        if self._engine is not None:
            self._engine.stop_accepting()

    async def drained(self) -> None:
        """Returns once the engine has nothing queued or running."""
        if self._engine is not None:
            await self._engine.wait_idle()

    async def close(self) -> None:
        for task in (self._load_task, self._tuning_task):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._engine is not None:
            await self._engine.close()
        self._text_thread.shutdown(wait=False, cancel_futures=True)
        self._prep_threads.shutdown(wait=False, cancel_futures=True)
        self._quality.close()

    # ---- health ----------------------------------------------------------------------

    def refresh_gauges(self) -> None:
        if self._memory is not None:
            self.metrics.gpu_memory_used.set(self._memory.used_bytes())
        if self._engine is not None:
            self.metrics.queue_depth.set(self._engine.queue_depth)
            self.metrics.queued_audio_seconds.set(self._engine.queued_audio_seconds)

    def memory_percent(self) -> float | None:
        if self._memory is None or self._budget_bytes <= 0:
            return None
        used = self._memory.used_bytes()
        return None if used == 0 else 100.0 * used / self._budget_bytes

    def worker_stuck_s(self) -> float:
        """How long a model call abandoned after its batch deadline has been stuck since."""
        return 0.0 if self._engine is None else self._engine.stuck_for_s()

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
        if self._engine is not None:
            detail["queue_depth"] = self._engine.queue_depth
            detail["max_batch_size"] = self._engine.limits.max_batch_size
            detail["request_share"] = self._engine.limits.request_share
            detail["tuning"] = self.tuning.detail()
            stuck = self.worker_stuck_s()
            if stuck > 0:
                detail["worker_stuck_s"] = round(stuck, 1)
        return ready, detail

    # ---- the model and its voices ----------------------------------------------------

    def model(self) -> SpeechModel:
        """The loaded model, or Unavailable (503) while it loads or after it failed."""
        if self.state is State.FAILED:
            raise Unavailable(f"the model failed to load: {self.failure}", retry_after_s=30)
        if self._model is None or self._engine is None:
            raise Unavailable("the model is still loading", retry_after_s=5)
        return self._model

    @property
    def model_name(self) -> str:
        return self._model.name if self._model is not None else self.settings.model

    @property
    def sampling_rate(self) -> int:
        return self.model().sampling_rate

    def serves(self, model_id: str) -> bool:
        """Whether a request naming `model_id` is for this pod (OpenAI's names are)."""
        return model_id in {self.model_name, self.settings.model, *OPENAI_MODEL_ALIASES}

    def check_model(self, model_id: str) -> None:
        model = self.model()
        if not self.serves(model_id):
            raise UnknownModel(
                f"model {model_id!r} is not served here; use {model.name!r}", param="model"
            )

    @property
    def clones_voices(self) -> bool:
        return self.voice_library.encoder is not None

    def resolve_voice(self, name: str, *, principal: Principal, param: str = "voice") -> Voice:
        """A built-in voice by id, an OpenAI voice name, or an uploaded voice `principal`
        may use (fetched beforehand with `ensure_voices`); UnknownVoice naming `param`
        otherwise. Another key's voice answers exactly like one that does not exist."""
        model = self.model()
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
                    param=param,
                )
            uploaded = self.voice_library.cached(name, principal)
            if uploaded is None:
                raise UnknownVoice(f"no uploaded voice {name!r} (deleted?)", param=param)
            return Voice(uploaded.id, uploaded.name, 0, embedding=uploaded.embedding)
        known = ", ".join([v.id for v in model.voices] + list(OPENAI_VOICES))
        raise UnknownVoice(f"unknown voice {name!r}; this model offers: {known}", param=param)

    async def ensure_voices(self, *names: str) -> None:
        """Fetch the uploaded voices among `names` (from Redis) so `resolve_voice` finds them."""
        if self.clones_voices:
            await self.voice_library.ensure(list(names))

    def builtin_voices(self) -> list[dict[str, object]]:
        model = self.model()
        count = len(model.voices)
        return [
            {
                "id": voice.id,
                "name": voice.name,
                "model": model.name,
                "aliases": [
                    n for n in OPENAI_VOICES if openai_voice_index(n, count) == voice.speaker_index
                ],
            }
            for voice in model.voices
        ]

    async def catalogue(self, principal: Principal) -> list[dict[str, object]]:
        """Built-in voices, then the uploaded ones `principal` may see (when this model
        clones voices)."""
        listed = [{**v, "type": "builtin"} for v in self.builtin_voices()]
        if self.clones_voices:
            listed += [self._card(v) for v in await self.voice_library.list(principal)]
        return listed

    async def upload_voice(
        self, name: str, data: bytes, principal: Principal, consent: str | None = None
    ) -> dict[str, object]:
        voice = await self._require_cloning().upload(name, data, principal, consent)
        return self._card(voice)

    async def delete_voice(self, voice_id: str, principal: Principal) -> None:
        if any(v.id == voice_id for v in self.model().voices):
            raise InvalidInput(f"{voice_id!r} is a built-in voice; it cannot be deleted")
        await self._require_cloning().delete(voice_id, principal)

    def _require_cloning(self) -> VoiceLibrary:
        model = self.model()
        if not self.clones_voices:
            raise VoiceCloningUnsupported(
                f"the loaded model {model.name!r} ({model.family}) cannot clone voices from "
                "reference audio; serve a SpeechT5 checkpoint to upload voices"
            )
        return self.voice_library

    def _card(self, voice: UploadedVoice) -> dict[str, object]:
        return {
            "id": voice.id,
            "name": voice.name,
            "model": self.model_name,
            "type": "uploaded",
            "duration": voice.duration,
            "created_at": int(voice.created_at),
            "consent": voice.consent,
        }

    # ---- text -> schedulable items ---------------------------------------------------
    #
    # THE seam where text becomes model input, for speech requests and jobs alike:
    #   prepare(text)   clean control characters, then engine/textprep.py's one pipeline:
    #                   sentences (pysbd), normalization for the model's language (numbers,
    #                   abbreviations; not for families that read numbers themselves), the
    #                   vocabulary check (400 `unsupported_characters`, or a count), and the
    #                   cut of long sentences at clause boundaries (--segment-max-seconds).
    #                   Pure and thread-safe; never on the event loop (a 100k-character job
    #                   takes about a second): `segments` runs it on the text thread, jobs
    #                   plan in a worker thread.
    #   items(...)      tokenize each segment on the text thread (never on the event loop,
    #                   never on the engine worker), seed it by its position in the request,
    #                   and build SynthesisItems.
    # Segments with nothing pronounceable are dropped (their index still counts for seeds).

    @property
    def text_profile(self) -> TextProfile:
        """How the loaded model reads text (Unavailable while it loads)."""
        self.model()
        assert self._text_profile is not None
        return self._text_profile

    def _profile(self, model: SpeechModel) -> TextProfile:
        profile = model.text_profile
        if self.settings.language:
            # --language overrides what the model says (or does not say).
            profile = replace(profile, language=resolve_language(self.settings.language))
        return profile

    def prepare(
        self, text: str, *, speed: float = 1.0, require_speech: bool = True
    ) -> PreparedText:
        """Stage 1: `text` as the segments the model will read. Unspeakable text becomes
        UnsupportedCharacters (mostly outside the vocabulary, the characters named) or
        InvalidInput (nothing to say), both 400 on `input`."""
        # The cap is on audio seconds: at a slower speed each character lasts longer.
        max_chars = segment_chars(
            self.settings.segment_max_seconds, DEFAULT_CHARS_PER_SECOND * speed
        )
        try:
            return prepare_text(
                clean_text(text), self.text_profile, max_chars, require_speech=require_speech
            )
        except UnspeakableText as exc:
            error = UnsupportedCharacters if exc.check.dropped_count else InvalidInput
            raise error(str(exc), param="input") from exc

    def count_dropped(self, prepared: PreparedText) -> None:
        """Count and log the characters an accepted text loses to the vocabulary."""
        check = prepared.check
        if check.dropped_count:
            self.metrics.dropped_characters.inc(check.dropped_count)
            log.info(
                "input loses %d of %d letters, digits and symbols to the model's vocabulary: %s",
                check.dropped_count,
                check.total,
                check.named(),
            )

    async def segments(self, text: str, *, speed: float = 1.0) -> list[str]:
        """Stage 1 for one whole text (a speech request), on a prep thread."""
        loop = asyncio.get_running_loop()
        prepared = await loop.run_in_executor(
            self._prep_threads, lambda: self.prepare(text, speed=speed)
        )
        self.count_dropped(prepared)
        return prepared.segments

    async def items(
        self,
        segments: Sequence[str],
        voice: Voice,
        *,
        speed: float,
        seed: int | None,
        first_index: int = 0,
        fault: str | None = None,
    ) -> list[SynthesisItem]:
        """Stage 2: the schedulable items of `segments`, which start at position
        `first_index` among their request's segments (their seeds derive from it)."""
        model = self.model()
        loop = asyncio.get_running_loop()
        # One text-thread job a segment: a one-liner arriving meanwhile waits for one
        # segment's phonemes, not for a whole long text's (34 ms for the vs-Piper bench's
        # ten sentences with espeak-ng; bench/RESULTS.md, "Fairness").
        token_lists = [
            await loop.run_in_executor(self._text_thread, model.tokenize, segment)
            for segment in segments
        ]
        return self._build(
            segments, token_lists, voice, speed=speed, seed=seed, first_index=first_index,
            fault=fault,
        )  # fmt: skip

    @staticmethod
    def _build(
        segments: Sequence[str],
        token_lists: Sequence[list[int]],
        voice: Voice,
        *,
        speed: float,
        seed: int | None,
        first_index: int,
        fault: str | None,
    ) -> list[SynthesisItem]:
        return [
            SynthesisItem(
                tokens,
                voice.speaker_index,
                speed,
                segment_seed(seed, first_index + offset),
                speaker_embedding=voice.embedding,
                fault=fault,
                characters=len(segments[offset]),
            )
            for offset, tokens in enumerate(token_lists)
            if tokens
        ]

    async def timed_items(
        self,
        text: str,
        voice: Voice,
        *,
        speed: float,
        seed: int | None,
        fault: str | None = None,
    ) -> TimedItems:
        """Both stages for one whole text, with what word timestamps need: the same items
        as `text_to_items`, plus the input's words and, per item, the input word each
        token sounds (engine/timestamps.py). TimestampsUnsupported for families that
        predict no per-token durations."""
        model = self.model()
        silent = model.silent_tokens
        if silent is None:
            raise TimestampsUnsupported(
                f"the loaded model {model.name!r} ({model.family}) predicts no per-token "
                "durations, so it cannot give word timestamps (VITS and Piper voices can)"
            )
        profile = self.text_profile

        def weigh(word: str) -> int:
            spoken = normalize(word, profile.language, reads_numbers=profile.reads_numbers)
            return len(spoken.split())

        def prepare() -> tuple[list[str], WordPlan]:
            prepared = self.prepare(text, speed=speed)
            self.count_dropped(prepared)
            return prepared.segments, plan_words(prepared.sentences, weigh)

        loop = asyncio.get_running_loop()
        segments, plan = await loop.run_in_executor(self._prep_threads, prepare)
        token_lists, owner_lists = await loop.run_in_executor(
            self._text_thread, _tokenize_timed, model, segments, plan, silent
        )
        items = self._build(
            segments, token_lists, voice, speed=speed, seed=seed, first_index=0, fault=fault
        )
        owners = [owned for tokens, owned in zip(token_lists, owner_lists, strict=True) if tokens]
        return TimedItems(items, plan.words, owners, silent, model.break_tokens)

    async def text_to_items(
        self,
        text: str,
        voice: Voice,
        *,
        speed: float,
        seed: int | None,
        fault: str | None = None,
    ) -> list[SynthesisItem]:
        """Both stages for one whole text (a speech request)."""
        segments = await self.segments(text, speed=speed)
        return await self.items(segments, voice, speed=speed, seed=seed, fault=fault)

    # ---- the engine ------------------------------------------------------------------

    def submit(
        self, items: Sequence[SynthesisItem], *, slo_scale: float = 1.0
    ) -> list[asyncio.Future[np.ndarray]]:
        """Queue `items` (one future each, in order) or refuse: Overloaded (429) when the
        queue is full, Unavailable (503) while loading, failed or draining."""
        model = self.model()
        assert self._engine is not None
        try:
            # Batches are formed per family: items of different families never share a call.
            futures = self._engine.submit(items, slo_scale=slo_scale, group=model.family)
        except QueueFull as exc:
            raise Overloaded(
                "the server is at capacity; retry after the indicated delay", exc.retry_after_s
            ) from exc
        except EngineStopped as exc:
            raise Unavailable(str(exc), retry_after_s=5) from exc
        self._quality.watch(futures, items, model.sampling_rate, requestid.current.get())
        return futures

    def cancel(self, futures: Sequence[asyncio.Future[np.ndarray]]) -> None:
        """Drop the unfinished ones among `futures` (their caller went away or failed).
        Cancelled ones count as unfinished: a cancelled `gather` has already cancelled its
        futures, and their segments still wait in the queue until the engine drops them."""
        unfinished = [f for f in futures if not f.done() or f.cancelled()]
        if unfinished and self._engine is not None:
            self._engine.cancel(unfinished)


def _tokenize_timed(
    model: SpeechModel, segments: list[str], plan: WordPlan, silent: frozenset[int]
) -> tuple[list[list[int]], list[list[int]]]:
    """Runs on the text thread: each segment's tokens and, per token, the input word it
    sounds (-1: silent, or a word the plan could not place)."""
    token_lists, owner_lists = [], []
    for segment, words_of_segment in zip(segments, plan.segments, strict=True):
        tokens = model.tokenize(segment)
        local = token_owners(model.tokenize, segment.split(), tokens, silent) if tokens else []
        owner_lists.append(
            [words_of_segment[i] if 0 <= i < len(words_of_segment) else -1 for i in local]
        )
        token_lists.append(tokens)
    return token_lists, owner_lists


@dataclass(frozen=True, slots=True)
class TimedItems:
    """A text's items with their word alignment (see `ModelRuntime.timed_items`)."""

    items: list[SynthesisItem]
    # The input's words as captions show them (engine/timestamps.py `display_word`).
    words: list[str]
    # Per item: per token, the index in `words` of the word it sounds (-1: silent).
    owners: list[list[int]]
    silent: frozenset[int]
    # Silent tokens that separate words (others belong to the word before them).
    breaks: frozenset[int]
