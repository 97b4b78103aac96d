"""Shared constants and helpers of the chart tests (imported by conftest and test modules)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "voicefleet"
KUBE_VERSION = "1.37.0"
RELEASE = "vf"
NAMESPACE = "voicefleet-system"

# Values sets rendered by the tests, each once per session. Keep "default" empty: it is what
# `helm install` without flags produces.
VALUE_SETS: dict[str, dict[str, Any]] = {
    "default": {},
    "namespaced": {"operator": {"watch": {"scope": "namespace", "namespace": "tts"}}},
    "full": {
        "operator": {"peering": {"enabled": True}, "logLevel": "verbose"},
        "sampleVoiceService": {"enabled": True},
        "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
        "autoscaling": {
            "prometheusAdapter": {"enabled": True, "namespace": "monitoring"},
        },
    },
    "namespaced-full": {
        "operator": {"watch": {"scope": "namespace"}, "peering": {"enabled": True}},
        "sampleVoiceService": {"enabled": True, "name": "english"},
        "serviceMonitor": {"enabled": True},
        "autoscaling": {"prometheusAdapter": {"enabled": True}},
    },
    "monitoring": {
        "serviceMonitor": {"enabled": True},
        "monitoring": {
            "operatorMetrics": {"podMonitor": {"enabled": True, "labels": {"release": "kps"}}},
            "prometheusRule": {"enabled": True, "alertLabels": {"team": "speech"}},
            "grafanaDashboard": {"enabled": True, "namespace": "monitoring", "folder": "TTS"},
        },
    },
    "overrides": {
        "fullnameOverride": "a-very-long-platform-team-release-name-that-goes-past-the-dns-limit",
        "commonLabels": {"team": "speech"},
        "serviceAccount": {"create": False, "name": "existing-sa"},
        "operator": {
            "image": {"digest": "sha256:" + "a" * 64},
            "imagePullSecrets": [{"name": "regcred"}],
            "extraArgs": ["--verbose"],
            "extraEnv": [{"name": "EXTRA", "value": "1"}],
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "infra",
                             "effect": "NoSchedule"}],
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "priorityClassName": "system-cluster-critical",
            "logFormat": "json",
            "settings": {"redisImage": "redis:7.4.2-alpine", "guardIntervalSeconds": 2.5},
        },
        "server": {"image": {"repository": "registry.example.com/tts/server", "tag": "1.2.3"}},
    },
}


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, got {[d['metadata']['name'] for d in found]}"
    return found[0]
