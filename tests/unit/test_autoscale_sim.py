"""The traffic-peak simulator: deterministic for a seed, quiet when capacity exceeds
load, and honouring the scale-down stabilization window."""

from __future__ import annotations

import json
from pathlib import Path

from voicefleet_bench.autoscale import report, traces
from voicefleet_bench.autoscale.capacity import PodCapacity, StartupModel, capacity_from_bench
from voicefleet_bench.autoscale.hpa import Behavior
from voicefleet_bench.autoscale.signals import SIGNALS
from voicefleet_bench.autoscale.sim import SimConfig, simulate

CAPACITY = PodCapacity(((1.0, 10.0),), 1, 4.0, "test")
STARTUP = StartupModel(load_and_warmup_s=20.0, image_pull_s=30.0)


def _run(trace: traces.Trace, seed: int = 3, **changes: object):  # type: ignore[no-untyped-def]
    requests = traces.generate(trace, CAPACITY.audio_s_per_sentence, CAPACITY.peak_throughput, seed)
    config = SimConfig(
        signal=SIGNALS["queued_audio"], capacity=CAPACITY, startup=STARTUP, seed=seed, **changes
    )  # type: ignore[arg-type]
    return simulate(requests, trace.duration_s, config)


def test_same_seed_same_result() -> None:
    trace = traces.spike(1.0, 10.0, start_s=120.0, minutes=3.0, duration_s=900.0)
    a = _run(trace, min_replicas=2, max_replicas=30)
    b = _run(trace, min_replicas=2, max_replicas=30)
    assert a.ttfa == b.ttfa
    assert a.series == b.series
    assert a.gpu_seconds == b.gpu_seconds
    c = _run(trace, seed=4, min_replicas=2, max_replicas=30)
    assert c.arrivals != a.arrivals


def test_capacity_above_load_stays_at_min_replicas() -> None:
    # A tenth of one pod's work spread over 3 pods: nothing ever needs scaling.
    result = _run(traces.steady(0.1, 1200.0), min_replicas=3, max_replicas=20)
    assert max(result.series["pods"]) == 3
    assert result.pods_created == 3
    assert not any(result.rejected)


def test_spike_scales_up_then_waits_out_the_window_before_scaling_down() -> None:
    spike_end = 120.0 + 180.0
    trace = traces.spike(1.0, 10.0, start_s=120.0, minutes=3.0, duration_s=1500.0, ramp_s=10.0)
    result = _run(trace, min_replicas=2, max_replicas=30, behavior=Behavior())
    series = result.series
    peak = max(series["pods"])
    assert peak >= 8
    # No pod goes away within the default 300 s scale-down window after the spike.
    for t, pods in zip(series["t"], series["pods"], strict=True):
        if spike_end <= t <= spike_end + 240.0:
            assert pods >= peak - 1, (t, pods)
    assert series["pods"][-1] < peak


def test_scores_and_capacity_from_a_bench_report(tmp_path: Path) -> None:
    bench = {
        "schema": "voicefleet-bench/1",
        "created_utc": "x",
        "client_machine": {"cpu": "c", "cpu_count": 2},
        "target": {"model": "m"},
        "stages": [
            {
                "offered_audio_s_per_s": 5.0,
                "throughput_audio_s_per_s": 5.0,
                "server": {"batch_size": {"mean": 1.0}},
                "by_kind": {"short": {"audio_s": {"mean": 3.0}}},
            },
            {
                "offered_audio_s_per_s": 50.0,
                "throughput_audio_s_per_s": 9.0,
                "server": {"batch_size": {"mean": 1.0}},
            },
        ],
        "summary": {"capacity_audio_s_per_s": 9.0},
    }
    (tmp_path / "b.json").write_text(json.dumps(bench))
    cap = capacity_from_bench(json.loads((tmp_path / "b.json").read_text()))
    assert cap.curve == ((1.0, 9.0),)  # only the saturated stage counts
    assert cap.audio_s_per_sentence == 3.0
    result = _run(traces.steady(0.5, 600.0), min_replicas=2, max_replicas=4)
    score = report.score("s", result, 5.0, None)
    assert 0.0 < score.slo_share <= 1.0
    assert score.gpu_minutes == 20.0  # 2 pods x 10 min
