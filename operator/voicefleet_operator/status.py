"""The VoiceService `.status`: conditions and counters computed from what the operator saw.

Pure functions: the reconciler passes the live server Deployment (or None) and any error;
the guard passes its decision. Conditions keep their lastTransitionTime unless their
status flips, as Kubernetes API conventions ask.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from voicefleet_operator import cache, naming
from voicefleet_operator.cache import CachePlan

READY = "Ready"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"
MEMORY_PRESSURE = "MemoryPressure"
MODEL_CACHED = "ModelCached"
CONDITION_ORDER = (READY, PROGRESSING, DEGRADED, MEMORY_PRESSURE, MODEL_CACHED)


@dataclass(frozen=True)
class CacheView:
    """What a reconcile pass saw of the model cache: where the model goes, and the live
    fetch Job and claim (None when absent)."""

    target: CachePlan
    job_name: str
    job: Mapping[str, Any] | None
    claim: Mapping[str, Any] | None


def model_cached(view: CacheView) -> tuple[bool, str, str]:
    """The ModelCached condition: (status, reason, message)."""
    target = view.target
    where = f"claim {target.claim}, directory {target.slot}"
    phase = ((view.claim or {}).get("status") or {}).get("phase")
    state, detail = cache.job_state(view.job)
    if state == "succeeded":
        return True, "Cached", f"{target.label} is cached ({where})."
    if state == "failed":
        return False, "FetchFailed", (
            f"Job {view.job_name} could not fetch {target.label}: {detail or 'failed'}."
            f" Fix the cause (see its pod's log), then delete the Job to fetch again."
        )
    if view.claim is None:
        return False, "ClaimMissing", (
            f"PersistentVolumeClaim {target.claim} does not exist (yet); server pods wait."
        )
    if phase == "Pending":
        return False, "ClaimPending", (
            f"PersistentVolumeClaim {target.claim} is Pending: its storage class must offer"
            f" the requested access modes (ReadWriteMany by default); server pods wait."
        )
    return False, "Fetching", (
        f"Job {view.job_name} is fetching {target.label} ({where}); server pods wait."
    )


def timestamp(now: datetime.datetime) -> str:
    return now.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def set_condition(
    conditions: Sequence[Mapping[str, Any]],
    type_: str,
    status: bool,
    reason: str,
    message: str,
    *,
    now: datetime.datetime,
    generation: int | None = None,
) -> list[dict[str, Any]]:
    """A copy of `conditions` with `type_` set, in a stable order."""
    value = "True" if status else "False"
    by_type = {c.get("type"): dict(c) for c in conditions if c.get("type")}
    previous = by_type.get(type_)
    changed = previous is None or previous.get("status") != value
    condition: dict[str, Any] = {
        "type": type_,
        "status": value,
        "reason": reason,
        "message": message,
        "lastTransitionTime": timestamp(now)
        if changed or previous is None
        else previous.get("lastTransitionTime", timestamp(now)),
    }
    if generation is not None:
        condition["observedGeneration"] = generation
    by_type[type_] = condition
    order = {t: i for i, t in enumerate(CONDITION_ORDER)}
    return sorted(by_type.values(), key=lambda c: (order.get(c["type"], 99), c["type"]))


def rollout(deployment: Mapping[str, Any] | None) -> tuple[int, int, int, bool]:
    """(wanted, ready, updated, settled) of a Deployment. `wanted` is spec.replicas (what
    the HPA asks for now); settled means the controller has seen the latest spec."""
    if deployment is None:
        return 0, 0, 0, False
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    generation = (deployment.get("metadata") or {}).get("generation")
    observed = status.get("observedGeneration")
    settled = observed is not None and (generation is None or observed >= generation)
    replicas = spec.get("replicas")
    return (
        1 if replicas is None else int(replicas),  # the API server's default
        int(status.get("readyReplicas") or 0),
        int(status.get("updatedReplicas") or 0),
        settled,
    )


def reconciled_status(
    current: Mapping[str, Any],
    *,
    name: str,
    namespace: str,
    generation: int | None,
    deployment: Mapping[str, Any] | None,
    spec_error: str | None,
    api_error: str | None,
    now: datetime.datetime,
    blocked: tuple[str, str] | None = None,
    cache_view: CacheView | None = None,
) -> dict[str, Any]:
    """The status after a reconcile pass. MemoryPressure and memoryGuard are the guard's
    and stay as they are. `blocked` is (reason, message) of something the cluster lacks
    (KEDA); `cache_view` is None when the spec has no model cache (ModelCached then goes,
    unless the pass failed before it could look)."""
    conditions: list[dict[str, Any]] = [dict(c) for c in current.get("conditions") or []]
    wanted, ready, updated, settled = rollout(deployment)

    if spec_error:
        degraded = (True, "InvalidSpec", spec_error)
    elif api_error:
        degraded = (True, "ReconcileFailed", api_error)
    elif blocked:
        degraded = (True, *blocked)
    else:
        degraded = (False, "AsExpected", "All children match the spec.")

    if deployment is None:
        progressing = (True, "Creating", "The server Deployment is being created.")
    elif not settled or updated < wanted or ready < wanted:
        progressing = (
            True,
            "RollingOut",
            f"{ready}/{wanted} server pods ready, {updated}/{wanted} on the latest spec.",
        )
    else:
        progressing = (False, "Complete", f"All {wanted} server pods are ready and current.")

    if ready > 0:
        readiness = (True, "ReplicasReady", f"{ready}/{wanted} server pods ready.")
    elif deployment is None:
        readiness = (False, "NoDeployment", "The server Deployment does not exist yet.")
    else:
        readiness = (
            False,
            "NoReadyReplicas",
            f"0/{wanted} server pods ready (model loading can take minutes).",
        )

    for type_, (flag, reason, message) in (
        (READY, readiness),
        (PROGRESSING, progressing),
        (DEGRADED, degraded),
    ):
        conditions = set_condition(
            conditions, type_, flag, reason, message, now=now, generation=generation
        )
    if not any(c["type"] == MEMORY_PRESSURE for c in conditions):
        conditions = set_condition(
            conditions, MEMORY_PRESSURE, False, "BelowWatermark", "No reading above the"
            " watermark yet.", now=now, generation=generation,
        )
    if cache_view is not None:
        conditions = set_condition(conditions, MODEL_CACHED, *model_cached(cache_view),
                                   now=now, generation=generation)
    elif not spec_error and not api_error:
        conditions = [c for c in conditions if c["type"] != MODEL_CACHED]

    status: dict[str, Any] = {
        "replicas": wanted,
        "readyReplicas": ready,
        # For the scale subresource: `kubectl scale`, or an autoscaler aimed at the
        # VoiceService itself, finds its pods with this.
        "selector": naming.selector_string(name, naming.SERVER),
        "endpoint": naming.endpoint(name, namespace),
        "conditions": conditions,
    }
    if generation is not None:
        status["observedGeneration"] = generation
    return status


def guard_status(
    current: Mapping[str, Any],
    *,
    over: Sequence[str],
    restarted: str | None,
    message: str,
    now: datetime.datetime,
    generation: int | None,
) -> dict[str, Any]:
    """The status after a guard pass: MemoryPressure, and the restart counters when the
    guard restarted `restarted`."""
    guard: dict[str, Any] = dict(current.get("memoryGuard") or {})
    guard.setdefault("restarts", 0)
    guard["overWatermark"] = sorted(over)
    if restarted:
        guard["restarts"] = int(guard["restarts"]) + 1
        guard["lastRestart"] = timestamp(now)
        guard["lastRestartPod"] = restarted
    pressure = (bool(over), "AboveWatermark" if over else "BelowWatermark", message)
    conditions = set_condition(
        current.get("conditions") or [],
        MEMORY_PRESSURE,
        *pressure,
        now=now,
        generation=generation,
    )
    return {"memoryGuard": guard, "conditions": conditions}


def needs_update(current: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Whether patching `new` would change anything (keeps the API and watchers quiet)."""
    return any(current.get(key) != value for key, value in new.items())
