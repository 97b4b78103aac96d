"""The server's autoscaler, one per `spec.autoscaling.mode`, built by pure functions:
`hpa` an autoscaling/v2 HorizontalPodAutoscaler, `keda` a KEDA ScaledObject on the same
signal with the same behaviour, `none` nothing (spec.replicas sets the count).

Both scale on queued audio-seconds per pod (requests are a poor proxy for TTS work: one
request can be a sentence or a chapter), or on CPU where no metrics pipeline exists. The
behaviour comes from the autoscaling study (docs/autoscaling.md, bench/autoscale_sim.py).
"""

from __future__ import annotations

from typing import Any

from voicefleet_operator import naming
from voicefleet_operator.spec import ServiceSpec

KEDA_API_VERSION = "keda.sh/v1alpha1"
HPA_API_VERSION = "autoscaling/v2"
# Scale up at once (no window; double or +4 pods every 15 s, whichever is more: a 10x peak
# is fully asked for within a minute); a freshly started pod costs a model load, so shrink
# only after 5 minutes of lower recommendations, then by at most 20 % or 2 pods a minute.
SCALE_UP_POLICIES = (("Percent", 100, 15), ("Pods", 4, 15))
SCALE_DOWN_STABILIZATION_SECONDS = 300
SCALE_DOWN_POLICIES = (("Percent", 20, 60), ("Pods", 2, 60))
QUEUED_AUDIO_METRIC = "voicefleet_queued_audio_seconds"
# KEDA asks Prometheus this often (the HPA's own sync period is 15 s too).
KEDA_POLLING_SECONDS = 15


def _meta(name: str, namespace: str) -> dict[str, Any]:
    return {"name": naming.server_name(name), "namespace": namespace,
            "labels": naming.labels(name, naming.SERVER)}


def _target(name: str) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "name": naming.server_name(name)}


def hpa_metric(spec: ServiceSpec) -> dict[str, Any]:
    if spec.autoscaling.metric == "cpu":
        return {
            "type": "Resource",
            "resource": {
                "name": "cpu",
                "target": {
                    "type": "Utilization",
                    "averageUtilization": int(spec.autoscaling.target),
                },
            },
        }
    # Needs a custom-metrics adapter serving it (prometheus-adapter; see docs/helm.md).
    return {
        "type": "Pods",
        "pods": {
            "metric": {"name": QUEUED_AUDIO_METRIC},
            "target": {"type": "AverageValue", "averageValue": spec.autoscaling.target},
        },
    }


def _policies(policies: tuple[tuple[str, int, int], ...]) -> list[dict[str, Any]]:
    return [{"type": t, "value": v, "periodSeconds": p} for t, v, p in policies]


def hpa_behavior() -> dict[str, Any]:
    return {
        "scaleUp": {
            "stabilizationWindowSeconds": 0,
            "selectPolicy": "Max",
            "policies": _policies(SCALE_UP_POLICIES),
        },
        "scaleDown": {
            "stabilizationWindowSeconds": SCALE_DOWN_STABILIZATION_SECONDS,
            "selectPolicy": "Max",
            "policies": _policies(SCALE_DOWN_POLICIES),
        },
    }


def server_hpa(spec: ServiceSpec, name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": HPA_API_VERSION,
        "kind": "HorizontalPodAutoscaler",
        "metadata": _meta(name, namespace),
        "spec": {
            "scaleTargetRef": _target(name),
            "minReplicas": spec.autoscaling.min_replicas,
            "maxReplicas": spec.autoscaling.max_replicas,
            "metrics": [hpa_metric(spec)],
            "behavior": hpa_behavior(),
        },
    }


def queued_audio_query(name: str, namespace: str) -> str:
    """All of one service's queued audio-seconds. KEDA's AverageValue divides it by the
    replica count, which is what the HPA's per-pod average is. Series carry the pod label
    voicefleet.dev/service as voicefleet_dev_service (the chart's ServiceMonitor copies it;
    annotation-based scrape configs map pod labels the same way)."""
    return (f'sum({QUEUED_AUDIO_METRIC}{{namespace="{namespace}",'
            f'voicefleet_dev_service="{name}"}})')


def keda_trigger(spec: ServiceSpec, name: str, namespace: str) -> dict[str, Any]:
    if spec.autoscaling.metric == "cpu":
        return {"type": "cpu", "metricType": "Utilization",
                "metadata": {"value": spec.autoscaling.target}}
    return {
        "type": "prometheus",
        "metricType": "AverageValue",
        "metadata": {
            "serverAddress": spec.autoscaling.prometheus_url,
            "query": queued_audio_query(name, namespace),
            "threshold": spec.autoscaling.target,
            # No series yet (a fresh service) reads as nothing queued, not as an error.
            "ignoreNullValues": "true",
        },
    }


def server_scaled_object(spec: ServiceSpec, name: str, namespace: str) -> dict[str, Any]:
    """KEDA makes its own HPA (keda-hpa-<name>) from this, with our behaviour."""
    return {
        "apiVersion": KEDA_API_VERSION,
        "kind": "ScaledObject",
        "metadata": _meta(name, namespace),
        "spec": {
            "scaleTargetRef": _target(name),
            "minReplicaCount": spec.autoscaling.min_replicas,
            "maxReplicaCount": spec.autoscaling.max_replicas,
            "pollingInterval": KEDA_POLLING_SECONDS,
            "advanced": {"horizontalPodAutoscalerConfig": {"behavior": hpa_behavior()}},
            "triggers": [keda_trigger(spec, name, namespace)],
        },
    }


def wanted(spec: ServiceSpec, name: str, namespace: str) -> dict[str, Any] | None:
    """The autoscaler `spec.autoscaling.mode` asks for (None for mode none)."""
    if spec.autoscaling.mode == "hpa":
        return server_hpa(spec, name, namespace)
    if spec.autoscaling.mode == "keda":
        return server_scaled_object(spec, name, namespace)
    return None


# (apiVersion, plural, kind) of every autoscaler the operator may have made.
KINDS = (
    (HPA_API_VERSION, "horizontalpodautoscalers", "HorizontalPodAutoscaler"),
    (KEDA_API_VERSION, "scaledobjects", "ScaledObject"),
)


def retired(spec: ServiceSpec) -> list[tuple[str, str, str]]:
    """Autoscalers of the other modes: deleted once the wanted one is in place."""
    keep = {"hpa": "HorizontalPodAutoscaler", "keda": "ScaledObject"}.get(
        spec.autoscaling.mode)
    return [kind for kind in KINDS if kind[2] != keep]
