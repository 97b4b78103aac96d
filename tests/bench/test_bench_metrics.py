"""Prometheus /metrics parsing, before/after diffs and histogram digests."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from voicefleet_bench import metrics


def _registry() -> tuple[CollectorRegistry, Histogram, Histogram, Counter, Gauge]:
    reg = CollectorRegistry()
    batch = Histogram("voicefleet_batch_size", "b", buckets=(1, 2, 4, 8), registry=reg)
    wait = Histogram("voicefleet_queue_wait_seconds", "w", buckets=(0.1, 1.0), registry=reg)
    reqs = Counter("voicefleet_requests", "r", ["route", "status"], registry=reg)
    depth = Gauge("voicefleet_queue_depth", "d", registry=reg)
    return reg, batch, wait, reqs, depth


def test_diff_of_histograms_and_counters_covers_only_the_run() -> None:
    reg, batch, _wait, reqs, _depth = _registry()
    batch.observe(8)  # history before the run
    reqs.labels("speech", "200").inc(5)
    before = metrics.parse(generate_latest(reg).decode())
    for size in (1, 1, 2, 4):
        batch.observe(size)
    reqs.labels("speech", "200").inc(3)
    reqs.labels("speech", "429").inc()
    after = metrics.parse(generate_latest(reg).decode())
    report = metrics.server_report(before, after, [after])
    hist = report["batch_size"]
    assert hist["count"] == 4
    assert hist["mean"] == pytest.approx(2.0)
    assert hist["buckets"] == [{"le": 1.0, "count": 2}, {"le": 2.0, "count": 1},
                               {"le": 4.0, "count": 1}]
    assert hist["p50"] == 1.0  # not interpolated: batch sizes are integers
    assert hist["p95"] == 4.0
    assert report["requests"] == {"speech 200": 3, "speech 429": 1}
    assert report["padding_waste"] is None  # not exported by this registry


def test_bucket_quantile_interpolates_like_prometheus() -> None:
    bounds = [0.1, 1.0, float("inf")]
    assert metrics.bucket_quantile(0.5, bounds, [0, 10, 10]) == pytest.approx(0.55)
    assert metrics.bucket_quantile(0.5, bounds, [10, 10, 10]) == pytest.approx(0.05)
    assert metrics.bucket_quantile(0.99, bounds, [0, 0, 10]) == 1.0  # +Inf: highest finite
    assert metrics.bucket_quantile(0.5, bounds, [0, 0, 0]) is None


def test_peaks_keep_the_highest_gauge_value() -> None:
    reg, _b, _w, _r, depth = _registry()
    snaps = []
    for value in (3, 11, 2):
        depth.set(value)
        snaps.append(metrics.parse(generate_latest(reg).decode()))
    peaks = metrics.peaks(snaps)
    assert peaks["queue_depth"] == 11
    assert peaks["gpu_memory_used_bytes"] is None


def test_total_filters_by_label() -> None:
    reg, _b, _w, reqs, _d = _registry()
    reqs.labels("speech", "200").inc(2)
    reqs.labels("jobs", "200").inc(1)
    snap = metrics.parse(generate_latest(reg).decode())
    assert metrics.total(snap, "voicefleet_requests_total") == 3
    assert metrics.total(snap, "voicefleet_requests_total", route="jobs") == 1
    assert metrics.total(snap, "missing") is None
