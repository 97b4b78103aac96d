"""The operator's own Prometheus metrics: what it did and what it sees per VoiceService.

Alerts need two facts the server pods cannot export: how many replicas a service may
reach (queued audio growing *at* maxReplicas means the fleet is too small) and how
often the memory guard restarted a pod. Series carry `namespace` and
`voicefleet_dev_service`, the labels the server series get from the ServiceMonitor's
podTargetLabels, so alert rules can join them; scrape with `honorLabels: true`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

LABELS = ("namespace", "voicefleet_dev_service")


def service_figures(
    spec: Mapping[str, Any], deployment: Mapping[str, Any] | None
) -> dict[str, int]:
    """Replicas the server Deployment has and has ready, and the most it may have."""
    autoscaling = spec.get("autoscaling") or {}
    dep_status = (deployment or {}).get("status") or {}
    replicas = int(dep_status.get("replicas") or 0)
    if autoscaling.get("mode", "hpa") == "none":
        most = int(spec.get("replicas") or (deployment or {}).get("spec", {}).get("replicas") or 1)
    else:
        most = int(autoscaling.get("maxReplicas") or 1)
    return {
        "replicas": replicas,
        "ready_replicas": int(dep_status.get("readyReplicas") or 0),
        "max_replicas": most,
    }


class OperatorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.guard_restarts = Counter(
            "voicefleet_operator_guard_restarts",
            "Server pods the memory guard restarted (evicted) for GPU memory above the watermark",
            LABELS,
            registry=r,
        )
        self.replicas = Gauge(
            "voicefleet_operator_service_replicas",
            "Server pods of a VoiceService (its Deployment's status.replicas)",
            LABELS,
            registry=r,
        )
        self.ready_replicas = Gauge(
            "voicefleet_operator_service_ready_replicas",
            "Ready server pods of a VoiceService",
            LABELS,
            registry=r,
        )
        self.max_replicas = Gauge(
            "voicefleet_operator_service_max_replicas",
            "Most server pods a VoiceService may have (autoscaling.maxReplicas)",
            LABELS,
            registry=r,
        )
        self.reconcile_errors = Counter(
            "voicefleet_operator_reconcile_errors",
            "Reconcile passes that ended with an invalid spec or a failed API call, by kind",
            [*LABELS, "kind"],
            registry=r,
        )

    def observe_service(
        self,
        namespace: str,
        name: str,
        spec: Mapping[str, Any],
        deployment: Mapping[str, Any] | None,
    ) -> None:
        figures = service_figures(spec, deployment)
        self.replicas.labels(namespace, name).set(figures["replicas"])
        self.ready_replicas.labels(namespace, name).set(figures["ready_replicas"])
        self.max_replicas.labels(namespace, name).set(figures["max_replicas"])
        # Exported from 0, so increase() sees the first restart.
        self.guard_restarts.labels(namespace, name)

    def forget(self, namespace: str, name: str) -> None:
        for metric in (self.replicas, self.ready_replicas, self.max_replicas, self.guard_restarts):
            with contextlib.suppress(KeyError):  # never observed
                metric.remove(namespace, name)

    def serve(self, port: int, address: str = "0.0.0.0") -> None:
        """Serve /metrics on a daemon thread (prometheus_client's own server)."""
        start_http_server(port, addr=address, registry=self.registry)
