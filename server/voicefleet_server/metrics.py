"""Prometheus metrics of one server process (names fixed by DESIGN.md).

One registry per app, so several apps in one process (tests) never collide. Queue
depth and queued audio-seconds are the autoscaling signals: requests are a poor proxy
for TTS work, audio-seconds waiting is what a new pod relieves.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
)

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        r = self.registry
        self.requests = Counter(
            "voicefleet_requests",
            "HTTP requests by route and status code",
            ["route", "status"],
            registry=r,
        )
        self.request_duration = Histogram(
            "voicefleet_request_duration_seconds",
            "Time from request to last audio byte",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.time_to_first_audio = Histogram(
            "voicefleet_time_to_first_audio_seconds",
            "Time from request to its first audio",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "voicefleet_queue_wait_seconds",
            "Time a segment waited before its batch ran",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "voicefleet_batch_size",
            "Segments per model call",
            buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128),
            registry=r,
        )
        self.padding_waste = Histogram(
            "voicefleet_batch_padding_waste_ratio",
            "Share of a batch's padded tokens that is padding",
            buckets=(0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0),
            registry=r,
        )
        self.batch_duration = Histogram(
            "voicefleet_batch_duration_seconds",
            "Wall time of one model call",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "voicefleet_queue_depth", "Segments waiting for the model", registry=r
        )
        self.queued_audio_seconds = Gauge(
            "voicefleet_queued_audio_seconds",
            "Estimated seconds of audio waiting to be synthesized (autoscaling signal)",
            registry=r,
        )
        self.inflight_requests = Gauge(
            "voicefleet_inflight_requests", "Speech requests being served", registry=r
        )
        self.audio_seconds = Counter(
            "voicefleet_audio_seconds", "Seconds of audio generated", registry=r
        )
        self.real_time_factor = Histogram(
            "voicefleet_real_time_factor",
            "Synthesis wall time per second of audio, per request",
            buckets=(0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10),
            registry=r,
        )
        self.fp32_reruns = Counter(
            "voicefleet_fp32_reruns",
            "Segments re-rendered in float32 after NaN/inf or silent reduced-precision output",
            registry=r,
        )
        self.failed_segments = Counter(
            "voicefleet_failed_segments",
            "Segments that could not be rendered",
            ["reason"],
            registry=r,
        )
        self.oom_splits = Counter(
            "voicefleet_oom_splits",
            "Batches split after running out of device memory",
            registry=r,
        )
        self.batch_timeouts = Counter(
            "voicefleet_batch_timeouts",
            "Model calls that ran past --batch-timeout-s (their batch failed with 504)",
            registry=r,
        )
        self.stuck_workers = Gauge(
            "voicefleet_stuck_workers",
            "Model worker threads abandoned after a batch timeout and still running",
            registry=r,
        )
        self.cache_hits = Counter("voicefleet_cache_hits", "Result cache hits", registry=r)
        self.cache_misses = Counter("voicefleet_cache_misses", "Result cache misses", registry=r)
        self.gpu_memory_used = Gauge(
            "voicefleet_gpu_memory_used_bytes", "GPU memory used by this process (NVML)", registry=r
        )
        self.gpu_memory_budget = Gauge(
            "voicefleet_gpu_memory_budget_bytes", "GPU memory this process may use", registry=r
        )
        self.redis_up = Gauge(
            "voicefleet_redis_up", "1 when Redis is configured and reachable", registry=r
        )
        self.ready = Gauge("voicefleet_ready", "1 when the pod is ready for traffic", registry=r)
        self.max_batch_size = Gauge(
            "voicefleet_max_batch_size",
            "Batch-size limit in force (after device tuning)",
            registry=r,
        )
        self.voice_cache_hits = Counter(
            "voicefleet_voice_embedding_cache_hits",
            "Uploaded-voice embeddings found in the cache (in-process LRU or Redis), by tier",
            ["tier"],
            registry=r,
        )
        self.voice_cache_misses = Counter(
            "voicefleet_voice_embedding_cache_misses",
            "Uploaded-voice embeddings not cached: the speaker encoder had to run",
            registry=r,
        )
        self.speaker_encoder_duration = Histogram(
            "voicefleet_speaker_encoder_seconds",
            "Wall time of one speaker-encoder run (decode excluded)",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
