"""Prometheus metrics of one server process (names are public: dashboards, the HPA and the
operator's memory guard read them; see README).

One registry per app, so several apps in one process (tests) never collide. Queue
depth and queued audio-seconds are the autoscaling signals: requests are a poor proxy
for TTS work, audio-seconds waiting is what a new pod relieves.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    ProcessCollector,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128)
# WADA-SNR spans -20..100 dB; clean TTS speech lands from ~28 dB up to the 100 dB cap
# (near-digital silence between words), noise near -20 dB.
_SNR_BUCKETS = (-10, 0, 5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 60, 80, 100)
# What `voicefleet_output_anomalies_total{kind}` counts (serving/quality.py decides).
ANOMALY_KINDS = ("nan", "silence", "clipping", "low_snr", "too_short", "too_long")
# Routes whose input the content policy checks (`voicefleet_content_policy_rejections_total`).
POLICY_ROUTES = ("speech", "captioned_speech", "jobs")
# Where `voicefleet_gpu_memory_used_bytes` comes from (engine/nvml.py decides).
GPU_MEMORY_SOURCES = ("process", "device", "torch_reserved")


@dataclass(frozen=True, slots=True)
class GpuReport:
    """One scrape's GPU readings; None fields are left out of /metrics."""

    utilization_ratio: float | None
    temperature_celsius: float | None
    power_watts: float | None
    memory_total_bytes: int | None
    memory_source: str | None


class GpuCollector(Collector):
    """GPU series read from NVML at scrape time. Nothing is exported until a reader is
    attached (the model runs on CUDA) and returns a report: on CPU the series are absent,
    not zero, so `avg(voicefleet_gpu_utilization_ratio)` averages GPUs only."""

    _FAMILIES = (
        ("voicefleet_gpu_utilization_ratio", "Share of time the GPU was busy (NVML, 0-1)"),
        ("voicefleet_gpu_temperature_celsius", "GPU core temperature (NVML)"),
        ("voicefleet_gpu_power_watts", "GPU board power draw (NVML)"),
        ("voicefleet_gpu_memory_total_bytes", "Memory of the GPU (or MIG instance) in use"),
    )
    _SOURCE = (
        "voicefleet_gpu_memory_source",
        "1 for the source voicefleet_gpu_memory_used_bytes is read from: process (NVML "
        "entry of this PID), device (NVML device memory, container alone on it) or "
        "torch_reserved (PyTorch allocator; misses the CUDA context)",
    )

    def __init__(self) -> None:
        self.read: Callable[[], GpuReport | None] | None = None

    def describe(self) -> list[Metric]:
        families: list[Metric] = [GaugeMetricFamily(n, d) for n, d in self._FAMILIES]
        families.append(GaugeMetricFamily(*self._SOURCE, labels=["source"]))
        return families

    def collect(self) -> Iterator[Metric]:
        report = self.read() if self.read is not None else None
        if report is None:
            return
        values = (
            report.utilization_ratio,
            report.temperature_celsius,
            report.power_watts,
            report.memory_total_bytes,
        )
        for (name, doc), value in zip(self._FAMILIES, values, strict=True):
            if value is not None:
                yield GaugeMetricFamily(name, doc, value=value)
        if report.memory_source is not None:
            family = GaugeMetricFamily(*self._SOURCE, labels=["source"])
            for source in GPU_MEMORY_SOURCES:
                family.add_metric([source], 1.0 if source == report.memory_source else 0.0)
            yield family


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        # python_gc_*: start-up pauses the collector (coldstart.py); these show it resumed.
        GCCollector(registry=self.registry)
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
        self.dropped_characters = Counter(
            "voicefleet_dropped_characters",
            "Letters, digits and symbols of accepted requests that the model's vocabulary "
            "lacks (spoken without them)",
            registry=r,
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
            "voicefleet_gpu_memory_used_bytes",
            "GPU memory this server holds (see voicefleet_gpu_memory_source for how it is read)",
            registry=r,
        )
        self.gpu = GpuCollector()
        r.register(self.gpu)
        self.gpu_memory_budget = Gauge(
            "voicefleet_gpu_memory_budget_bytes", "GPU memory this process may use", registry=r
        )
        self.redis_up = Gauge(
            "voicefleet_redis_up", "1 when Redis is configured and reachable", registry=r
        )
        self.redis_configured = Gauge(
            "voicefleet_redis_configured",
            "1 when --redis-url is set (tells 'Redis down' from 'no Redis' in alerts)",
            registry=r,
        )
        self.ready = Gauge("voicefleet_ready", "1 when the pod is ready for traffic", registry=r)
        self.max_batch_size = Gauge(
            "voicefleet_max_batch_size",
            "Batch-size limit in force (after device tuning)",
            registry=r,
        )
        self.precision_info = Gauge(
            "voicefleet_precision_info",
            "1 for the precision the model runs in (float32, or the autocast dtype: float16, "
            "bfloat16): set by --dtype, or measured at start-up for --dtype auto on CPU",
            ["dtype"],
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
        self.content_policy_rejections = Counter(
            "voicefleet_content_policy_rejections",
            "Requests refused by --blocked-terms-file, by route",
            ["route"],
            registry=r,
        )
        for route in POLICY_ROUTES:  # exported at 0 from the start
            self.content_policy_rejections.labels(route)
        self.output_snr_db = Histogram(
            "voicefleet_output_snr_db",
            "Estimated signal-to-noise ratio of each returned segment (WADA-SNR, dB)",
            buckets=_SNR_BUCKETS,
            registry=r,
        )
        self.output_anomalies = Counter(
            "voicefleet_output_anomalies",
            "Returned segments whose audio looks wrong, by kind (see docs/observability.md)",
            ["kind"],
            registry=r,
        )
        for kind in ANOMALY_KINDS:  # exported at 0 from the start, so rate() sees the first
            self.output_anomalies.labels(kind)
        self.quality_checks_skipped = Counter(
            "voicefleet_quality_checks_skipped",
            "Segments returned unchecked because the quality checker's backlog was full",
            registry=r,
        )
        self.quality_check_duration = Histogram(
            "voicefleet_quality_check_seconds",
            "CPU time of the audio-quality check of one segment",
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1),
            registry=r,
        )

    def set_precision(self, dtype: str) -> None:
        """Export `dtype` as the precision in force (the only series at 1; others removed)."""
        self.precision_info.clear()
        self.precision_info.labels(dtype).set(1)
