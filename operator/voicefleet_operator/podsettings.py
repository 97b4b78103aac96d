"""`spec.pod`: what a platform team passes through to the server pods (pull secrets,
scheduling, identity, extra env and volumes, the pod security context), checked for shape.

The builders merge these with what the operator sets itself; on a conflict the operator's
own labels, annotations, env vars, volumes and mount paths win (the CRD says so), because
the server's configuration and the selectors depend on them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from voicefleet_operator.fields import (
    SpecError,
    object_list,
    section,
    string,
    string_map,
)

WHERE = "spec.pod"
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


@dataclass(frozen=True)
class PodSettings:
    image_pull_secrets: tuple[dict[str, Any], ...] = ()
    annotations: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    affinity: Mapping[str, Any] | None = None
    priority_class_name: str | None = None
    topology_spread_constraints: tuple[dict[str, Any], ...] = ()
    runtime_class_name: str | None = None
    service_account_name: str | None = None
    env: tuple[dict[str, Any], ...] = ()
    volumes: tuple[dict[str, Any], ...] = ()
    volume_mounts: tuple[dict[str, Any], ...] = ()
    security_context: Mapping[str, Any] = field(default_factory=dict)


def _name(pod: Mapping[str, Any], key: str) -> str | None:
    value = string(pod, key, WHERE)
    if value is not None and (len(value) > 253 or not _DNS_SUBDOMAIN.match(value)):
        raise SpecError(f"{WHERE}.{key} must be a lowercase DNS name, got {value!r}")
    return value


def parse_pod(raw: Mapping[str, Any]) -> PodSettings:
    pod = section(raw, "pod")
    affinity = section(pod, "affinity", WHERE)
    return PodSettings(
        image_pull_secrets=object_list(pod.get("imagePullSecrets"), f"{WHERE}.imagePullSecrets",
                                       required=("name",), unique="name"),
        annotations=string_map(pod.get("annotations"), f"{WHERE}.annotations"),
        labels=string_map(pod.get("labels"), f"{WHERE}.labels"),
        affinity=dict(affinity) or None,
        priority_class_name=_name(pod, "priorityClassName"),
        topology_spread_constraints=object_list(
            pod.get("topologySpreadConstraints"), f"{WHERE}.topologySpreadConstraints"),
        runtime_class_name=_name(pod, "runtimeClassName"),
        service_account_name=_name(pod, "serviceAccountName"),
        env=object_list(pod.get("env"), f"{WHERE}.env", required=("name",), unique="name"),
        volumes=object_list(pod.get("volumes"), f"{WHERE}.volumes", required=("name",),
                            unique="name"),
        volume_mounts=object_list(pod.get("volumeMounts"), f"{WHERE}.volumeMounts",
                                  required=("name", "mountPath"), unique="mountPath"),
        security_context=dict(section(pod, "securityContext", WHERE)),
    )


def without(items: tuple[dict[str, Any], ...], key: str, taken: set[str]) -> list[dict[str, Any]]:
    """`items` minus those whose `key` the operator already uses (ours win on conflict)."""
    return [dict(item) for item in items if item.get(key) not in taken]
