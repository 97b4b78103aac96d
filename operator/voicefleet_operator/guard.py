"""The GPU memory guard's decisions, free of I/O: which pods to read, how to read their
/metrics text, and, from readings over time, which pod (if any) to restart now.

A pod is restarted only after it stayed above the watermark for `sustain_seconds` with no
reading in between that was below it or missing; one pod per service at a time, with a
cool-down between restarts. Unreachable metrics never count against a pod.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

USED_METRIC = "voicefleet_gpu_memory_used_bytes"
BUDGET_METRIC = "voicefleet_gpu_memory_budget_bytes"

# `name{labels} value [timestamp]` in the Prometheus text format.
_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{[^}]*\})?\s+(?P<value>\S+)")


def parse_metrics(
    text: str, names: Sequence[str] = (USED_METRIC, BUDGET_METRIC)
) -> dict[str, float]:
    """The values of `names` in a Prometheus text exposition (the largest if labelled
    series repeat a name). Missing or unparsable samples are left out."""
    wanted = set(names)
    found: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line.strip())
        if match is None or match["name"] not in wanted:
            continue
        try:
            value = float(match["value"])
        except ValueError:
            continue
        if math.isfinite(value):
            found[match["name"]] = max(value, found.get(match["name"], value))
    return found


@dataclass(frozen=True)
class Reading:
    """One pod's memory at one time; `used`/`budget` are None when it could not be read."""

    pod: str
    used: float | None
    budget: float | None

    @classmethod
    def from_metrics(cls, pod: str, metrics: Mapping[str, float] | None) -> Reading:
        if metrics is None:
            return cls(pod, None, None)
        return cls(pod, metrics.get(USED_METRIC), metrics.get(BUDGET_METRIC))

    @property
    def ratio(self) -> float | None:
        if self.used is None or self.budget is None or self.budget <= 0:
            return None
        return self.used / self.budget


@dataclass(frozen=True)
class Policy:
    watermark_percent: float
    sustain_seconds: float
    cooldown_seconds: float


@dataclass(frozen=True)
class GuardState:
    """Per service: since when each pod has been continuously above the watermark, and
    when the guard last restarted one of its pods (wall-clock seconds)."""

    over_since: Mapping[str, float] = field(default_factory=dict)
    last_restart: float | None = None


@dataclass(frozen=True)
class Decision:
    restart: str | None
    over: tuple[str, ...]
    message: str


def observe(
    state: GuardState, readings: Sequence[Reading], now: float, policy: Policy
) -> GuardState:
    """Fold this round's readings into the state. A pod that is below the watermark, not
    readable, or gone loses its streak."""
    threshold = policy.watermark_percent / 100.0
    over_since: dict[str, float] = {}
    for reading in readings:
        ratio = reading.ratio
        if ratio is not None and ratio >= threshold:
            over_since[reading.pod] = state.over_since.get(reading.pod, now)
    return replace(state, over_since=over_since)


def decide(
    state: GuardState,
    readings: Sequence[Reading],
    now: float,
    policy: Policy,
    *,
    restart_in_progress: bool = False,
) -> tuple[GuardState, Decision]:
    """Fold in the readings and pick at most one pod to restart now.

    `restart_in_progress` is true while any pod of the service is already terminating:
    one pod at a time, whoever started it.
    """
    state = observe(state, readings, now, policy)
    ratios = {r.pod: r.ratio for r in readings}
    over = tuple(sorted(state.over_since))
    due = [pod for pod, since in state.over_since.items() if now - since >= policy.sustain_seconds]
    if not over:
        return state, Decision(None, over, "All readable pods are below the watermark.")

    def describe(pod: str) -> str:
        ratio = ratios.get(pod) or 0.0
        return f"{pod} at {ratio:.0%} of its GPU memory budget"

    summary = ", ".join(describe(pod) for pod in over)
    if not due:
        return state, Decision(
            None,
            over,
            f"Above the {policy.watermark_percent:g}% watermark: {summary}; restart after"
            f" {policy.sustain_seconds:g}s sustained.",
        )
    if restart_in_progress:
        return state, Decision(None, over, f"{summary}; waiting for a terminating pod first.")
    if state.last_restart is not None and now - state.last_restart < policy.cooldown_seconds:
        left = policy.cooldown_seconds - (now - state.last_restart)
        return state, Decision(None, over, f"{summary}; cool-down for {left:.0f}s more.")
    # Longest streak first; between equals, the fullest pod.
    victim = min(due, key=lambda pod: (state.over_since[pod], -(ratios.get(pod) or 0.0)))
    return state, Decision(
        victim,
        over,
        f"Restarting {describe(victim)}: above the {policy.watermark_percent:g}% watermark"
        f" for {now - state.over_since[victim]:.0f}s.",
    )


def restarted(state: GuardState, pod: str, now: float) -> GuardState:
    """The state after `pod` was restarted: its streak ends and the cool-down starts."""
    over_since = {p: t for p, t in state.over_since.items() if p != pod}
    return GuardState(over_since=over_since, last_restart=now)


def metrics_url(pod: Mapping[str, Any], default_port: int) -> str | None:
    """Where to read a server pod's /metrics, or None if it should not be read: not
    Running, no IP yet, or already terminating."""
    metadata = pod.get("metadata") or {}
    status = pod.get("status") or {}
    if metadata.get("deletionTimestamp") or status.get("phase") != "Running":
        return None
    ip = status.get("podIP")
    if not ip:
        return None
    port = default_port
    for container in (pod.get("spec") or {}).get("containers") or []:
        for item in container.get("ports") or []:
            if item.get("name") == "http" and item.get("containerPort"):
                port = int(item["containerPort"])
    host = f"[{ip}]" if ":" in ip else ip
    return f"http://{host}:{port}/metrics"


def terminating(pods: Sequence[Mapping[str, Any]]) -> bool:
    return any((p.get("metadata") or {}).get("deletionTimestamp") for p in pods)
