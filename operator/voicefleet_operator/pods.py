"""Merging `spec.pod` into the pods the operator builds (server pods and the model-fetch
Job's pod): pure functions over plain dicts.

The rule everywhere: ours first, theirs added, ours win a conflict. Labels and annotations
are merged key by key with ours on top (selectors and scraping depend on them); env vars,
volumes and mount paths the operator sets are never replaced (the server's configuration
depends on them), the user's others are appended after ours (so `$(VAR)` references to
ours expand). The pod security context is the user's keys over our secure defaults, key by
key; the containers keep their own (no privilege escalation, no capabilities), which the
pod level cannot weaken.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from voicefleet_operator.podsettings import PodSettings, without

# The server image runs as this user and group (Dockerfile.server); a fresh volume gets this
# group so the non-root fetch Job can write to it.
IMAGE_UID = 10001
POD_SECURITY_DEFAULTS: dict[str, Any] = {
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
}


def merged_map(theirs: Mapping[str, str], ours: Mapping[str, str]) -> dict[str, str]:
    return {**theirs, **ours}


def merged_env(ours: list[dict[str, Any]], pod: PodSettings) -> list[dict[str, Any]]:
    return [*ours, *without(pod.env, "name", {e["name"] for e in ours})]


def merged_volumes(ours: list[dict[str, Any]], pod: PodSettings) -> list[dict[str, Any]]:
    return [*ours, *without(pod.volumes, "name", {v["name"] for v in ours})]


def merged_mounts(ours: list[dict[str, Any]], pod: PodSettings) -> list[dict[str, Any]]:
    return [*ours, *without(pod.volume_mounts, "mountPath", {m["mountPath"] for m in ours})]


def security_context(pod: PodSettings, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Our pod-level defaults (plus `extra`), with the user's keys on top."""
    return {**POD_SECURITY_DEFAULTS, **(extra or {}), **pod.security_context}


def pod_fields(pod: PodSettings, *, scheduling: bool) -> dict[str, Any]:
    """The pass-through pod spec fields. `scheduling` adds affinity, topology spread and the
    runtime class, which only the GPU server pods want (the fetch Job needs no GPU)."""
    fields: dict[str, Any] = {}
    if pod.image_pull_secrets:
        fields["imagePullSecrets"] = [dict(s) for s in pod.image_pull_secrets]
    if pod.service_account_name:
        fields["serviceAccountName"] = pod.service_account_name
    if pod.priority_class_name:
        fields["priorityClassName"] = pod.priority_class_name
    if scheduling:
        if pod.affinity:
            fields["affinity"] = dict(pod.affinity)
        if pod.topology_spread_constraints:
            fields["topologySpreadConstraints"] = [dict(t) for t in
                                                   pod.topology_spread_constraints]
        if pod.runtime_class_name:
            fields["runtimeClassName"] = pod.runtime_class_name
    return fields

