"""The memory guard's decision function: readings over time in, at most one restart out."""

from __future__ import annotations

import random

import pytest
from operator_helpers import FIGURES
from voicefleet_operator import guard
from voicefleet_operator.guard import GuardState, Policy, Reading, decide

POLICY = Policy(watermark_percent=90, sustain_seconds=30, cooldown_seconds=120)
GIB = 2**30

pytestmark = pytest.mark.timeout(20)


def hot(pod: str) -> Reading:
    return Reading(pod, used=9.5 * GIB, budget=10 * GIB)


def cool(pod: str) -> Reading:
    return Reading(pod, used=4 * GIB, budget=10 * GIB)


def run(rounds: list[tuple[float, list[Reading]]], state: GuardState | None = None,
        policy: Policy = POLICY) -> list[str | None]:
    """Feed rounds of readings; returns the restart picked each round (and applies it)."""
    state = state or GuardState()
    picked: list[str | None] = []
    for now, readings in rounds:
        state, decision = decide(state, readings, now, policy)
        picked.append(decision.restart)
        if decision.restart:
            state = guard.restarted(state, decision.restart, now)
    return picked


def test_restart_only_after_sustained_pressure() -> None:
    rounds = [(t, [hot("a"), cool("b")]) for t in (0, 10, 20, 29, 30, 35)]
    assert run(rounds) == [None, None, None, None, "a", None]


def test_a_dip_below_the_watermark_resets_the_streak() -> None:
    rounds = [(0, [hot("a")]), (20, [cool("a")]), (25, [hot("a")]), (50, [hot("a")]),
              (55, [hot("a")])]
    assert run(rounds) == [None, None, None, None, "a"]


def test_unreachable_metrics_never_restart_and_break_the_streak() -> None:
    gone = Reading("a", None, None)
    rounds = [(0, [hot("a")]), (20, [gone]), (40, [gone]), (60, [gone]), (70, [hot("a")])]
    assert run(rounds) == [None] * 5


def test_missing_or_zero_budget_is_no_information() -> None:
    rounds = [(t, [Reading("a", used=5.0, budget=0.0), Reading("b", used=5.0, budget=None)])
              for t in (0, 100, 200)]
    assert run(rounds) == [None, None, None]


def test_one_pod_at_a_time_with_cooldown() -> None:
    rounds = [(t, [hot("a"), hot("b")]) for t in (0, 30, 60, 120, 150)]
    # Both are due at 30; only one goes. b's streak continues; cool-down holds it until 150.
    assert run(rounds) == [None, "a", None, None, "b"]


def test_longest_streak_goes_first() -> None:
    rounds = [(0, [hot("b"), cool("a")]), (10, [hot("b"), hot("a")]), (40, [hot("b"), hot("a")])]
    assert run(rounds) == [None, None, "b"]


def test_no_restart_while_another_pod_terminates() -> None:
    state, _ = decide(GuardState(), [hot("a")], 0, POLICY)
    state, decision = decide(state, [hot("a")], 40, POLICY, restart_in_progress=True)
    assert decision.restart is None and "terminating" in decision.message
    _, decision = decide(state, [hot("a")], 45, POLICY)
    assert decision.restart == "a"


def test_cooldown_survives_from_status() -> None:
    state = GuardState(last_restart=1000.0)
    rounds = [(1000 + t, [hot("a")]) for t in (0, 40, 119, 121)]
    assert run(rounds, state) == [None, None, None, "a"]


def test_zero_sustain_restarts_on_first_reading() -> None:
    policy = Policy(watermark_percent=90, sustain_seconds=0, cooldown_seconds=60)
    assert run([(0, [hot("a")])], policy=policy) == ["a"]


def test_decision_reports_pods_over_the_watermark() -> None:
    _, decision = decide(GuardState(), [hot("b"), cool("c"), hot("a")], 0, POLICY)
    assert decision.over == ("a", "b")
    assert "95%" in decision.message


def test_parse_metrics() -> None:
    text = """# HELP voicefleet_gpu_memory_used_bytes GPU memory used by this process.
# TYPE voicefleet_gpu_memory_used_bytes gauge
voicefleet_gpu_memory_used_bytes 9.663676416e+09
voicefleet_gpu_memory_budget_bytes{device="0"} 1.073741824e+10
voicefleet_gpu_memory_budget_bytes_total 5
voicefleet_requests_total{route="/v1/audio/speech",status="200"} 12
voicefleet_queued_audio_seconds NaN
"""
    assert guard.parse_metrics(text) == {
        "voicefleet_gpu_memory_used_bytes": 9663676416.0,
        "voicefleet_gpu_memory_budget_bytes": 10737418240.0,
    }
    assert guard.parse_metrics("garbage\n{}") == {}
    reading = Reading.from_metrics("p", guard.parse_metrics(text))
    assert reading.ratio is not None and 0.89 < reading.ratio < 0.91


def test_metrics_url() -> None:
    pod = {
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "server", "ports": [{"name": "http",
                                                                "containerPort": 8123}]}]},
        "status": {"phase": "Running", "podIP": "10.1.2.3"},
    }
    assert guard.metrics_url(pod, 8000) == "http://10.1.2.3:8123/metrics"
    assert guard.metrics_url({**pod, "spec": {}}, 8000) == "http://10.1.2.3:8000/metrics"
    assert guard.metrics_url({**pod, "status": {"phase": "Pending"}}, 8000) is None
    assert guard.metrics_url({**pod, "status": {"phase": "Running"}}, 8000) is None
    terminating = {**pod, "metadata": {"name": "p", "deletionTimestamp": "2025-01-01T00:00:00Z"}}
    assert guard.metrics_url(terminating, 8000) is None
    assert guard.terminating([pod, terminating]) and not guard.terminating([pod])
    v6 = {**pod, "status": {"phase": "Running", "podIP": "fd00::1"}}
    assert guard.metrics_url(v6, 8000) == "http://[fd00::1]:8123/metrics"


# --- Timelines: many random readings-over-time, checked against the guard's promises ----

def _streak_start(history: list[tuple[float, str]]) -> float | None:
    """When the pod's current run of readable above-watermark readings began."""
    start = None
    for t, kind in history:
        start = (start if start is not None else t) if kind == "hot" else None
    return start


def test_random_timelines_keep_every_promise() -> None:
    """Seeded random timelines (readings hot, cool or unreadable; pods terminating for a
    while after each restart): at most one restart at a time, never during another pod's
    termination, never inside the cool-down, never for a pod whose metrics were unreadable
    or below the watermark at any point of its last `sustain_seconds`."""
    rounds = restarts = 0
    violations: list[tuple[int, float, str]] = []
    for seed in range(150):
        rng = random.Random(seed)
        policy = Policy(watermark_percent=90, sustain_seconds=rng.choice([0, 10, 30]),
                        cooldown_seconds=rng.choice([0, 30, 120]))
        pods = {f"p{i}": 0 for i in range(rng.randint(1, 4))}  # name -> generation
        history: dict[str, list[tuple[float, str]]] = {}
        terminating_until: float = -1.0
        last_restart: float | None = None
        state, now = GuardState(), 0.0
        for _ in range(120):
            now += rng.choice([2.0, 5.0, 5.0, 7.0])
            readings = []
            for base, generation in pods.items():
                pod = f"{base}-{generation}"
                kind = rng.choices(["hot", "cool", "gone"], weights=[8, 2, 1])[0]
                history.setdefault(pod, []).append((now, kind))
                readings.append({"hot": hot, "cool": cool,
                                 "gone": lambda p: Reading(p, None, None)}[kind](pod))
            in_progress = now < terminating_until
            state, decision = decide(state, readings, now, policy,
                                     restart_in_progress=in_progress)
            rounds += 1
            if decision.restart is None:
                continue
            victim = decision.restart
            start = _streak_start(history[victim])
            # Each broken promise is recorded (and the timeline goes on), so the figure
            # below is what the decisions did, not a typed zero.
            if in_progress:
                violations.append((seed, now, "restart while another pod terminates"))
            if last_restart is not None and now - last_restart < policy.cooldown_seconds:
                violations.append((seed, now, "restart inside the cool-down"))
            if start is None or now - start < policy.sustain_seconds:
                violations.append((seed, now, f"{victim} not above the watermark long enough"))
            restarts += 1
            last_restart = now
            state = guard.restarted(state, victim, now)
            terminating_until = now + rng.choice([0.0, 4.0, 20.0])
            base = victim.rsplit("-", 1)[0]
            pods[base] += 1  # the Deployment replaces it with a new pod
    FIGURES["guard timeline rounds checked (pure decision)"] += rounds
    FIGURES["guard restarts in those timelines"] += restarts
    FIGURES["guard promise violations (during termination, in cool-down, unreadable or "
            "unsustained)"] += len(violations)
    assert restarts > 100  # the timelines did exercise restarts
    assert violations == []
