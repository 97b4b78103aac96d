"""Server settings: one pydantic model, filled from `voicefleet serve` flags and
`VOICEFLEET_<FLAG>` environment variables (how the operator configures pods).

Defaults that the VoiceService CRD also sets come from `voicefleet.defaults`, and
`--vram-budget` is read by `voicefleet.quantity`, the parser the operator uses too: a pod
started by hand behaves like one the operator started.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator

from voicefleet import defaults
from voicefleet.quantity import QuantityError, parse_bytes
from voicefleet_server.engine.quality import QualityLimits


class ServerSettings(BaseModel):
    model_config = {"extra": "forbid"}

    model: str = Field(
        defaults.MODEL,
        description="what to serve: a Piper voice (VOICE.onnx with its .onnx.json, a directory "
        "holding one, or a `convert-piper` output), a VITS checkpoint (directory or Hugging "
        "Face id, e.g. facebook/mms-tts-eng), or SpeechT5 for voices from reference audio "
        "(see --vocoder, --speaker-encoder). Default: the bundled English Piper voice",
    )
    revision: str | None = Field(
        None, description="model revision (branch, tag or commit) on the hub"
    )
    host: str = Field("0.0.0.0", description="address to listen on")
    port: int = Field(8000, ge=1, le=65535, description="port to listen on")
    batch_window_ms: float = Field(
        float(defaults.BATCH_WINDOW_MS),
        ge=0,
        description="how long the oldest waiting segment may wait for batch mates",
    )
    max_batch_size: int = Field(
        defaults.MAX_BATCH_SIZE, ge=1, le=1024, description="most segments per model call"
    )
    max_queue: int = Field(
        defaults.MAX_QUEUE,
        ge=1,
        description="most segments waiting; beyond it requests get 429 + Retry-After",
    )
    vram_budget: str | None = Field(
        None, description="GPU memory this pod may use (e.g. 8Gi); default: the whole device"
    )
    vram_watermark_percent: float = Field(
        defaults.VRAM_WATERMARK_PERCENT,
        ge=1,
        le=100,
        description="readiness fails while GPU memory is above this share of the budget",
    )
    device: str = Field("auto", description="auto (CUDA when present), cpu, cuda or cuda:N")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto",
        description="auto: float16 on CUDA; on CPU float32, or bfloat16 decoder autocast when "
        "start-up tuning measures it clearly faster with the same output",
    )
    redis_url: str | None = Field(None, description="Redis for shared cache, jobs and rate limits")
    max_input_chars: int = Field(
        4096, ge=1, description="longest `input` accepted by /v1/audio/speech"
    )
    drain_seconds: float = Field(
        float(defaults.DRAIN_SECONDS),
        ge=0,
        description="on SIGTERM, how long to finish accepted work before exiting",
    )
    model_workers: int = Field(
        1,
        ge=0,
        le=64,
        description="CPU: model calls run side by side, each with cores / running calls intra-op "
        "threads (1: one call at a time with every core, batched and preempted; 0: one per "
        "core of the CPU quota); ignored on CUDA",
    )
    model_worker_nice: int = Field(
        5,
        ge=0,
        le=19,
        description="niceness added to the model worker threads (and their OpenMP threads): "
        "request handling, text preparation and espeak-ng run ahead of model calls when "
        "they compete for a core (0: same priority)",
    )
    autotune: bool = Field(
        True,
        description="on CPU, measure batch sizes (and, with --dtype auto, bf16 vs float32) "
        "after start-up, in idle moments, and switch to what measured clearly faster",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="log level")
    # ---- text handling (docs/text.md) ----
    language: str | None = Field(
        None,
        description="language of the text the model reads (en, deu, pt-BR), for reading "
        "numbers and abbreviations; default: what the model says (MMS checkpoints name theirs)",
    )
    segment_max_seconds: float = Field(
        8.0,
        gt=0,
        le=600,
        description="cap on one segment's expected audio; longer sentences are cut at clause "
        "boundaries so a long text holds the model for less time at once",
    )
    # ---- Redis, long-form jobs, result cache, rate limits (docs/jobs.md) ----
    redis_prefix: str = Field(
        "voicefleet:", description="prefix of every Redis key (to share one Redis between services)"
    )
    job_max_input_chars: int = Field(
        100_000, ge=1, description="longest job `input` (100k characters is ~90 minutes of speech)"
    )
    job_chunk_segments: int = Field(
        8, ge=1, le=256, description="most sentence segments per job chunk (the unit users fetch)"
    )
    job_turn_pause_ms: float = Field(
        400, ge=0, le=10_000, description="silence between speaker turns of a dialogue job"
    )
    job_window_segments: int = Field(
        16, ge=1, description="most segments one job keeps in the engine queue at once"
    )
    max_running_jobs: int = Field(
        2, ge=1, description="jobs this replica renders at once; others wait as queued"
    )
    job_ttl_s: int = Field(86_400, ge=60, description="how long a job's status and audio are kept")
    job_storage: str | None = Field(
        None,
        description="where job audio lives: s3://BUCKET/PREFIX, redis or memory (default: redis "
        "with --redis-url, else memory); S3 endpoint and keys come from boto3's environment",
    )
    job_url_ttl: int = Field(
        3600,
        ge=60,
        le=7 * 86_400,
        description="lifetime of presigned chunk and result URLs (seconds, or 90m, 1h, 7d)",
    )
    job_url_endpoint: str | None = Field(
        None,
        description="S3 endpoint that clients reach, when it differs from the pods' one "
        "(presigned URLs are signed for it)",
    )
    job_storage_retry_s: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="how long a job retries unreachable object storage before it fails "
        "with storage_unavailable",
    )
    job_storage_credentials_dir: str | None = Field(
        None,
        description="a mounted Secret with files AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
        "(re-read when rotated); default: boto3's own credential chain",
    )
    job_heartbeat_s: float = Field(
        2.0, gt=0, le=60, description="replica heartbeat period; silent for 4x this means gone"
    )
    cache: Literal["off", "seeded", "all"] = Field(
        "seeded",
        description="result cache for /v1/audio/speech: seeded requests only, all, or off",
    )
    cache_ttl_s: int = Field(3600, ge=1, description="how long a cached result is kept")
    cache_memory_mb: int = Field(
        64, ge=0, description="in-process cache size, used without Redis or while it is down"
    )
    rate_limit_rps: float = Field(
        0, ge=0, description="requests per second per client (API key or IP); 0 turns limits off"
    )
    rate_limit_burst: int = Field(20, ge=1, description="requests a client may make at once")
    # ---- hardening (docs/reliability.md) ----
    api_key: SecretStr | None = Field(
        None,
        description="API keys (comma-separated) clients must send as `Authorization: Bearer`; "
        "none: no auth",
    )
    api_key_file: str | None = Field(
        None, description="file of API keys, one a line (a mounted Secret); re-read when it changes"
    )
    batch_timeout_s: float = Field(
        120.0,
        ge=0,
        description="most seconds one model call may take; its requests then get 504 and a "
        "fresh worker takes over (0: no deadline)",
    )
    body_timeout_s: float = Field(
        30.0, gt=0, description="most seconds a client may take to send a request body (408)"
    )
    fault_injection: bool = Field(
        False,
        description="TEST ONLY: honour X-Voicefleet-Fault request headers; never in production",
    )

    # ---- voices from reference audio (docs/voices.md) ----
    vocoder: str = Field(
        "microsoft/speecht5_hifigan",
        description="SpeechT5 models only: the HiFi-GAN vocoder (directory or model id)",
    )
    speaker_encoder: str = Field(
        "microsoft/wavlm-base-plus-sv",
        description="SpeechT5 models only: the x-vector speaker encoder for uploaded voices",
    )
    voice_max_upload_mb: float = Field(
        10, gt=0, le=100, description="largest reference-audio upload, in MB"
    )
    voice_max_seconds: float = Field(
        30, gt=0, le=600, description="longest reference-audio upload, in seconds"
    )
    voice_ttl_s: int = Field(
        0, ge=0, description="how long an uploaded voice is kept in Redis (0: until deleted)"
    )
    voice_memory_entries: int = Field(
        1024, ge=1, description="uploaded voices kept in the in-process LRU in front of Redis"
    )

    # ---- audio quality of every returned segment (docs/observability.md) ----
    quality_min_snr_db: float = Field(
        25.0,
        ge=-20,
        le=100,
        description="a segment whose WADA-SNR estimate is below this (dB) counts as a "
        "low_snr anomaly (counted and logged, never blocks the response)",
    )
    quality_max_clipping_ratio: float = Field(
        0.001,
        ge=0,
        le=1,
        description="share of samples at full scale beyond which a segment counts as clipping",
    )
    quality_max_silence_ratio: float = Field(
        0.8,
        ge=0,
        le=1,
        description="share of silent 20 ms frames beyond which a segment counts as silence",
    )
    quality_min_seconds_per_char: float = Field(
        0.02,
        ge=0,
        description="audio seconds per input character (at speed 1) below which a "
        "segment counts as too_short",
    )
    quality_max_seconds_per_char: float = Field(
        0.4,
        gt=0,
        description="audio seconds per input character (at speed 1) above which a "
        "segment counts as too_long",
    )

    # ---- tenancy and content (README "API keys, ownership and content policy") ----
    admin_api_key: SecretStr | None = Field(
        None,
        description="an API key that sees and manages every key's uploaded voices and jobs "
        "(it is accepted as a key too)",
    )
    blocked_terms_file: str | None = Field(
        None,
        description="file of blocked terms, one a line (/.../ for a regular expression); "
        "input containing one gets 400 content_policy_violation; re-read when it changes",
    )

    @property
    def quality_limits(self) -> QualityLimits:
        return QualityLimits(
            min_snr_db=self.quality_min_snr_db,
            max_clipping_ratio=self.quality_max_clipping_ratio,
            max_silence_ratio=self.quality_max_silence_ratio,
            min_seconds_per_char=self.quality_min_seconds_per_char,
            max_seconds_per_char=self.quality_max_seconds_per_char,
        )

    @property
    def voice_max_upload_bytes(self) -> int:
        return int(self.voice_max_upload_mb * 1_000_000)

    @field_validator("job_url_ttl", mode="before")
    @classmethod
    def _duration(cls, value: object) -> object:
        """Seconds, or a number with s, m, h or d (`1h`)."""
        if isinstance(value, str):
            text = value.strip().lower()
            units = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
            if text[-1:] in units and text[:-1].replace(".", "", 1).isdigit():
                return round(float(text[:-1]) * units[text[-1]])
        return value

    @field_validator("job_storage")
    @classmethod
    def _storage(cls, value: str | None) -> str | None:
        s3 = r"s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?"
        if value is not None and value not in ("redis", "memory") and not re.fullmatch(s3, value):
            raise ValueError("expected s3://BUCKET/PREFIX, redis or memory")
        return value

    @model_validator(mode="after")
    def _storage_needs_redis(self) -> ServerSettings:
        if self.job_storage == "redis" and not self.redis_url:
            raise ValueError("--job-storage redis needs --redis-url")
        return self

    @field_validator("vram_budget")
    @classmethod
    def _budget_is_quantity(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_bytes(value)
            except QuantityError as exc:  # a ValueError: pydantic reports it per field
                raise ValueError(str(exc)) from exc
        return value

    @property
    def vram_budget_bytes(self) -> int | None:
        return None if self.vram_budget is None else parse_bytes(self.vram_budget)
