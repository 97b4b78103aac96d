"""The server's Prometheus /metrics as data: snapshots, before/after diffs, histogram digests.

A snapshot maps (sample name, sorted label pairs) to a value. Counters and histograms are
diffed over a run (after - before), so a long-lived server's history does not leak into a
stage; gauges (memory, queue depth) are sampled during the run and their peak is kept.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

Labels = tuple[tuple[str, str], ...]
Snapshot = dict[tuple[str, Labels], float]

BATCH_SIZE = "voicefleet_batch_size"
PADDING_WASTE = "voicefleet_batch_padding_waste_ratio"
QUEUE_WAIT = "voicefleet_queue_wait_seconds"
REQUEST_DURATION = "voicefleet_request_duration_seconds"
TTFA = "voicefleet_time_to_first_audio_seconds"
AUDIO_SECONDS = "voicefleet_audio_seconds_total"
REQUESTS = "voicefleet_requests_total"
PEAK_GAUGES = {
    "rss_bytes": "process_resident_memory_bytes",
    "gpu_memory_used_bytes": "voicefleet_gpu_memory_used_bytes",
    "gpu_memory_budget_bytes": "voicefleet_gpu_memory_budget_bytes",
    "queue_depth": "voicefleet_queue_depth",
    "queued_audio_seconds": "voicefleet_queued_audio_seconds",
}


def parse(text: str) -> Snapshot:
    """Every sample of a Prometheus text exposition, keyed by (name, labels)."""
    snap: Snapshot = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            snap[key] = float(sample.value)
    return snap


def diff(before: Snapshot, after: Snapshot) -> Snapshot:
    """after - before for every sample in `after` (a sample new in `after` counts from 0)."""
    return {key: value - before.get(key, 0.0) for key, value in after.items()}


def total(snap: Snapshot, name: str, **labels: str) -> float | None:
    """Sum of the samples called `name` whose labels include `labels`; None if there are none."""
    found = [
        v for (n, lab), v in snap.items() if n == name and _matches(lab, labels)
    ]
    return sum(found) if found else None


def _matches(labels: Labels, want: Mapping[str, str]) -> bool:
    have = dict(labels)
    return all(have.get(k) == v for k, v in want.items())


def histogram(snap: Snapshot, name: str, *, interpolate: bool = True) -> dict[str, Any] | None:
    """Digest of histogram `name` (all label sets merged) from a snapshot or a diff.

    Returns count, sum, mean, the non-empty buckets (non-cumulative counts with their `le`
    upper bound) and p50/p95/p99: interpolated inside the bucket as Prometheus'
    histogram_quantile does, or (`interpolate=False`, for integer data such as batch sizes
    on integer buckets) the upper bound of the bucket holding the rank. None when the
    server does not export the histogram.
    """
    cumulative: dict[float, float] = {}
    for (n, labels), value in snap.items():
        if n != f"{name}_bucket":
            continue
        le = dict(labels).get("le")
        if le is None:
            continue
        bound = math.inf if le in {"+Inf", "inf"} else float(le)
        cumulative[bound] = cumulative.get(bound, 0.0) + value
    if not cumulative:
        return None
    count = total(snap, f"{name}_count") or 0.0
    sum_ = total(snap, f"{name}_sum") or 0.0
    bounds = sorted(cumulative)
    buckets = []
    previous = 0.0
    for bound in bounds:
        buckets.append({"le": bound, "count": max(cumulative[bound] - previous, 0.0)})
        previous = cumulative[bound]
    return {
        "count": count,
        "sum": sum_,
        "mean": (sum_ / count) if count > 0 else None,
        "buckets": [
            {"le": ("+Inf" if math.isinf(b["le"]) else b["le"]), "count": b["count"]}
            for b in buckets if b["count"] > 0
        ],
        **{
            f"p{q}": bucket_quantile(q / 100, bounds, [cumulative[b] for b in bounds],
                                     interpolate=interpolate)
            for q in (50, 95, 99)
        },
    }


def bucket_quantile(
    q: float, bounds: list[float], cumulative: list[float], *, interpolate: bool = True
) -> float | None:
    """Prometheus' histogram_quantile: linear interpolation inside the bucket holding rank q.

    `bounds` are sorted upper bounds (the last may be +Inf), `cumulative` their counts.
    A rank in the +Inf bucket returns the highest finite bound.
    """
    if not bounds or not cumulative or cumulative[-1] <= 0:
        return None
    rank = q * cumulative[-1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in zip(bounds, cumulative, strict=True):
        if count >= rank:
            if math.isinf(bound):
                finite = [b for b in bounds if not math.isinf(b)]
                return finite[-1] if finite else None
            if count == lower_count or not interpolate:
                return bound
            share = (rank - lower_count) / (count - lower_count)
            return lower_bound + (bound - lower_bound) * share
        lower_bound, lower_count = bound, count
    return None


def peaks(samples: Iterable[Snapshot]) -> dict[str, float | None]:
    """Highest value of each gauge in PEAK_GAUGES over a series of snapshots."""
    out: dict[str, float | None] = dict.fromkeys(PEAK_GAUGES)
    for snap in samples:
        for key, name in PEAK_GAUGES.items():
            value = total(snap, name)
            if value is not None and (out[key] is None or value > (out[key] or 0.0)):
                out[key] = value
    return out


def server_report(
    before: Snapshot, after: Snapshot, samples: Iterable[Snapshot]
) -> dict[str, Any]:
    """What the server itself says about one stage: batching, queueing, audio, memory peaks."""
    delta = diff(before, after)
    requests: dict[str, float] = {}
    for (n, labels), value in delta.items():
        if n == REQUESTS and value:
            lab = dict(labels)
            key = f"{lab.get('route', '?')} {lab.get('status', '?')}"
            requests[key] = requests.get(key, 0.0) + value
    return {
        "batch_size": histogram(delta, BATCH_SIZE, interpolate=False),
        "padding_waste": histogram(delta, PADDING_WASTE),
        "queue_wait_s": histogram(delta, QUEUE_WAIT),
        "request_duration_s": histogram(delta, REQUEST_DURATION),
        "ttfa_s": histogram(delta, TTFA),
        "audio_seconds": total(delta, AUDIO_SECONDS),
        "requests": requests,
        "max_batch_size": total(after, "voicefleet_max_batch_size"),
        "peak": peaks(samples),
    }
