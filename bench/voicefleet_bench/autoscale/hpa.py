"""The Kubernetes HorizontalPodAutoscaler (autoscaling/v2) algorithm as pure functions.

Follows the documented algorithm (kubernetes.io, "Horizontal Pod Autoscaling": algorithm
details, configurable scaling behavior) and the controller it describes: per-metric
`desired = ceil(current * metric / target)` with a 10 % tolerance; missing metrics count as
the target on a scale-down and 0 on a scale-up; not-yet-ready pods count as 0 on a scale-up
(and are set aside for CPU); stabilization windows (highest recommendation in the
scale-down window, lowest in the scale-up window); Pods/Percent policies per period with
selectPolicy Max/Min/Disabled; min/max replicas. `HpaController` only keeps the history
(recommendations and scale events) that the pure functions read.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

DEFAULT_TOLERANCE = 0.1
DEFAULT_SYNC_PERIOD_S = 15.0

PolicyType = Literal["Pods", "Percent"]
SelectPolicy = Literal["Max", "Min", "Disabled"]


@dataclass(frozen=True)
class ScalingPolicy:
    """At most `value` pods (or percent of the replicas) changed per `period_s`."""

    type: PolicyType
    value: int
    period_s: float


@dataclass(frozen=True)
class ScalingRules:
    """One direction of `spec.behavior` (scaleUp or scaleDown)."""

    stabilization_window_s: float
    policies: tuple[ScalingPolicy, ...]
    select_policy: SelectPolicy = "Max"


def default_scale_up() -> ScalingRules:
    """Kubernetes' default: no window; +100 % or +4 pods per 15 s, whichever is more."""
    return ScalingRules(
        0.0, (ScalingPolicy("Percent", 100, 15.0), ScalingPolicy("Pods", 4, 15.0)), "Max"
    )


def default_scale_down() -> ScalingRules:
    """Kubernetes' default: 300 s window; up to 100 % of the pods per 15 s."""
    return ScalingRules(300.0, (ScalingPolicy("Percent", 100, 15.0),), "Max")


@dataclass(frozen=True)
class Behavior:
    scale_up: ScalingRules = field(default_factory=default_scale_up)
    scale_down: ScalingRules = field(default_factory=default_scale_down)

    def to_manifest(self) -> dict[str, object]:
        """The `spec.behavior` object of an autoscaling/v2 HPA."""

        def rules(r: ScalingRules) -> dict[str, object]:
            return {
                "stabilizationWindowSeconds": int(r.stabilization_window_s),
                "selectPolicy": r.select_policy,
                "policies": [
                    {"type": p.type, "value": p.value, "periodSeconds": int(p.period_s)}
                    for p in r.policies
                ],
            }

        return {"scaleUp": rules(self.scale_up), "scaleDown": rules(self.scale_down)}


@dataclass(frozen=True)
class PodSample:
    """One pod as the HPA sees it at a sync.

    `value` is the pod's metric (None: missing). `ready` is the Ready condition; `pending`
    means phase Pending (image pull, scheduling).
    """

    value: float | None
    ready: bool = True
    pending: bool = False


def ratio_within_tolerance(ratio: float, tolerance: float = DEFAULT_TOLERANCE) -> bool:
    return abs(1.0 - ratio) <= tolerance


def simple_desired_replicas(
    current_replicas: int,
    current_value: float,
    target_value: float,
    tolerance: float = DEFAULT_TOLERANCE,
) -> int:
    """The textbook formula: `ceil(current * currentValue / target)`, or no change
    when the ratio is within the tolerance."""
    ratio = current_value / target_value
    if ratio_within_tolerance(ratio, tolerance):
        return current_replicas
    return math.ceil(ratio * current_replicas)


def replicas_for_pod_metric(
    pods: Sequence[PodSample],
    target_value: float,
    current_replicas: int,
    *,
    cpu: bool = False,
    tolerance: float = DEFAULT_TOLERANCE,
) -> int | None:
    """Desired replicas for an AverageValue/AverageUtilization per-pod metric.

    Pending pods are set aside as unready; for CPU so are running pods that are not Ready
    (the initialization-period rule, simplified to "not Ready yet"); pods without a
    sample are missing. Returns None when no pod has a usable sample (the HPA then keeps
    the scale and reports the metric unavailable).
    """
    metrics: list[float] = []
    unready = 0
    missing = 0
    for pod in pods:
        if pod.pending or (cpu and not pod.ready):
            unready += 1
        elif pod.value is None:
            missing += 1
        else:
            metrics.append(pod.value)
    ready_count = len(metrics)
    if ready_count == 0:
        return None
    usage_ratio = (sum(metrics) / ready_count) / target_value
    scale_up_with_unready = unready > 0 and usage_ratio > 1.0
    if not scale_up_with_unready and missing == 0:
        if ratio_within_tolerance(usage_ratio, tolerance):
            return current_replicas
        return math.ceil(usage_ratio * ready_count)
    filled = list(metrics)
    if missing:
        # Scale-down: missing pods use exactly the target; scale-up: nothing.
        filled += [target_value if usage_ratio < 1.0 else 0.0] * missing
    if scale_up_with_unready:
        filled += [0.0] * unready
    new_ratio = (sum(filled) / len(filled)) / target_value
    if (
        ratio_within_tolerance(new_ratio, tolerance)
        or (usage_ratio > 1.0 and new_ratio < 1.0)
        or (usage_ratio < 1.0 and new_ratio > 1.0)
    ):
        return current_replicas
    new_replicas = math.ceil(new_ratio * len(filled))
    if (new_ratio < 1.0 and new_replicas > current_replicas) or (
        new_ratio > 1.0 and new_replicas < current_replicas
    ):
        return current_replicas
    return new_replicas


def stabilize(
    desired: int,
    current: int,
    history: Sequence[tuple[float, int]],
    now: float,
    behavior: Behavior,
) -> int:
    """Clamp `desired` between the lowest recommendation of the scale-up window and the
    highest of the scale-down window (both windows include `desired` itself).

    `history` holds earlier (time, unstabilized recommendation) pairs.
    """
    up_cutoff = now - behavior.scale_up.stabilization_window_s
    down_cutoff = now - behavior.scale_down.stabilization_window_s
    up = desired
    down = desired
    for t, rec in history:
        if t > up_cutoff:
            up = min(up, rec)
        if t > down_cutoff:
            down = max(down, rec)
    recommendation = current
    if recommendation < up:
        recommendation = up
    if recommendation > down:
        recommendation = down
    return recommendation


def _changed_within(period_s: float, events: Sequence[tuple[float, int]], now: float) -> int:
    return sum(n for t, n in events if t > now - period_s)


def scale_up_limit(
    current: int,
    up_events: Sequence[tuple[float, int]],
    down_events: Sequence[tuple[float, int]],
    now: float,
    rules: ScalingRules,
) -> int:
    """Most replicas the scale-up policies allow now (events: (time, pods changed))."""
    if rules.select_policy == "Disabled":
        return current
    results: list[int] = []
    for policy in rules.policies:
        start = (
            current
            - _changed_within(policy.period_s, up_events, now)
            + _changed_within(policy.period_s, down_events, now)
        )
        if policy.type == "Pods":
            results.append(start + policy.value)
        else:
            # Rounded up so that a small percentage still adds a pod.
            results.append(math.ceil(start * (1 + policy.value / 100)))
    return min(results) if rules.select_policy == "Min" else max(results)


def scale_down_limit(
    current: int,
    up_events: Sequence[tuple[float, int]],
    down_events: Sequence[tuple[float, int]],
    now: float,
    rules: ScalingRules,
) -> int:
    """Fewest replicas the scale-down policies allow now."""
    if rules.select_policy == "Disabled":
        return current
    results: list[int] = []
    for policy in rules.policies:
        start = (
            current
            + _changed_within(policy.period_s, down_events, now)
            - _changed_within(policy.period_s, up_events, now)
        )
        if policy.type == "Pods":
            results.append(start - policy.value)
        else:
            # Truncated, so the number of pods removed rounds up (80 -> 72 -> 64 at 10 %).
            results.append(int(start * (1 - policy.value / 100)))
    # "Max" means the policy allowing the biggest change, i.e. the fewest replicas.
    return max(results) if rules.select_policy == "Min" else min(results)


def apply_rate_limits(
    desired: int,
    current: int,
    up_events: Sequence[tuple[float, int]],
    down_events: Sequence[tuple[float, int]],
    now: float,
    behavior: Behavior,
    min_replicas: int,
    max_replicas: int,
) -> int:
    if desired > current:
        limit = max(scale_up_limit(current, up_events, down_events, now, behavior.scale_up),
                    current)
        return min(desired, max_replicas, limit)
    if desired < current:
        limit = min(
            scale_down_limit(current, up_events, down_events, now, behavior.scale_down), current
        )
        return max(desired, min_replicas, limit)
    return desired


@dataclass
class HpaController:
    """One HPA: bounds, behavior, and the history its decisions depend on."""

    min_replicas: int
    max_replicas: int
    behavior: Behavior = field(default_factory=Behavior)
    tolerance: float = DEFAULT_TOLERANCE
    recommendations: list[tuple[float, int]] = field(default_factory=list)
    up_events: list[tuple[float, int]] = field(default_factory=list)
    down_events: list[tuple[float, int]] = field(default_factory=list)

    def decide(self, now: float, current: int, metric_desired: int | None) -> int:
        """The replica count to set at a sync (equal to `current` for no change)."""
        if current > self.max_replicas:
            desired = self.max_replicas
        elif current < self.min_replicas:
            desired = self.min_replicas
        elif metric_desired is None:
            return current
        else:
            # As the controller does: stabilize the raw proposal, record it, then apply
            # the rate limits and the min/max bounds.
            stabilized = stabilize(
                metric_desired, current, self.recommendations, now, self.behavior
            )
            self._record(now, metric_desired)
            desired = apply_rate_limits(
                stabilized, current, self.up_events, self.down_events, now, self.behavior,
                self.min_replicas, self.max_replicas,
            )
        if desired > current:
            self.up_events.append((now, desired - current))
        elif desired < current:
            self.down_events.append((now, current - desired))
        self._forget(now)
        return desired

    def _record(self, now: float, recommendation: int) -> None:
        self.recommendations.append((now, recommendation))

    def _forget(self, now: float) -> None:
        keep = max(
            self.behavior.scale_up.stabilization_window_s,
            self.behavior.scale_down.stabilization_window_s,
        )
        self.recommendations = [(t, r) for t, r in self.recommendations if t > now - keep]
        longest = max(
            [p.period_s for p in self.behavior.scale_up.policies]
            + [p.period_s for p in self.behavior.scale_down.policies]
            + [0.0]
        )
        self.up_events = [(t, n) for t, n in self.up_events if t > now - longest]
        self.down_events = [(t, n) for t, n in self.down_events if t > now - longest]


def behavior_from_manifest(raw: Mapping[str, object]) -> Behavior:
    """Parse an HPA `spec.behavior` dict; absent parts take Kubernetes' defaults."""

    def rules(part: object, default: ScalingRules) -> ScalingRules:
        if not isinstance(part, Mapping):
            return default
        window = part.get("stabilizationWindowSeconds", default.stabilization_window_s)
        policies_raw = part.get("policies")
        policies = default.policies
        if isinstance(policies_raw, list) and policies_raw:
            policies = tuple(
                ScalingPolicy(p["type"], int(p["value"]), float(p["periodSeconds"]))
                for p in policies_raw
            )
        select = part.get("selectPolicy", "Max")
        assert select in ("Max", "Min", "Disabled"), select
        return ScalingRules(float(window), policies, select)

    return Behavior(
        scale_up=rules(raw.get("scaleUp"), default_scale_up()),
        scale_down=rules(raw.get("scaleDown"), default_scale_down()),
    )
