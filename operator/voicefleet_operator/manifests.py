"""Every child object of a VoiceService, built by pure functions (checked spec + name in,
plain dict out), plus `drift`, which tells whether a live object still matches its build.

Nothing here talks to the API: handlers add ownerReferences (`kopf.adopt`) and create or
patch what these functions return. Unit tests assert on the dicts directly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from voicefleet_operator import naming
from voicefleet_operator.spec import ServiceSpec

# The preStop pause lets endpoint controllers and kube-proxy drop the pod from the Service
# before the server starts refusing work; the drain then only sees requests already inside.
PRESTOP_SLEEP_SECONDS = 5
# Slack after the drain for process exit and log flushing before SIGKILL.
GRACE_SLACK_SECONDS = 10
# Model downloads and warm-up can take minutes: allow 10 minutes before liveness counts.
STARTUP_PERIOD_SECONDS = 10
STARTUP_FAILURES = 60
# HPA behaviour, from the autoscaling study (docs/autoscaling.md, bench/autoscale_sim.py):
# scale up at once (no window; double or +4 pods every 15 s, whichever is more: a 10x peak
# is fully asked for within a minute); a freshly started pod costs a model load, so shrink
# only after 5 minutes of lower recommendations, then by at most 20 % or 2 pods a minute.
SCALE_UP_POLICIES = (("Percent", 100, 15), ("Pods", 4, 15))
SCALE_DOWN_STABILIZATION_SECONDS = 300
SCALE_DOWN_POLICIES = (("Percent", 20, 60), ("Pods", 2, 60))
QUEUED_AUDIO_METRIC = "voicefleet_queued_audio_seconds"
CACHE_DIR = "/cache"
# The API key Secret is mounted as a directory (not subPath), so a rotated key reaches the
# running pods' file; only the one key is projected, as a fixed file name.
API_KEY_DIR = "/etc/voicefleet/auth"
API_KEY_FILE = "api-key"
API_KEY_VOLUME = "api-key"


def _meta(name: str, namespace: str, component: str, owner: str) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, "labels": naming.labels(owner, component)}


def server_env(spec: ServiceSpec, name: str) -> list[dict[str, Any]]:
    """The server's configuration: every `voicefleet serve` flag reads VOICEFLEET_<FLAG>."""
    env: list[dict[str, Any]] = [
        {"name": "VOICEFLEET_MODEL", "value": spec.model.variant},
        {"name": "VOICEFLEET_DTYPE", "value": spec.model.dtype},
        {"name": "VOICEFLEET_DEVICE", "value": "auto"},
        {"name": "VOICEFLEET_PORT", "value": str(naming.SERVER_PORT)},
        {"name": "VOICEFLEET_BATCH_WINDOW_MS", "value": str(spec.batching.window_ms)},
        {"name": "VOICEFLEET_MAX_BATCH_SIZE", "value": str(spec.batching.max_batch_size)},
        {"name": "VOICEFLEET_MAX_QUEUE", "value": str(spec.batching.max_queue)},
        {"name": "VOICEFLEET_VRAM_WATERMARK_PERCENT", "value": str(spec.vram.watermark_percent)},
        {"name": "VOICEFLEET_DRAIN_SECONDS", "value": str(spec.drain_seconds)},
        # Downloads from the Hub land in the pod's scratch volume, not the image.
        {"name": "HF_HOME", "value": f"{CACHE_DIR}/huggingface"},
    ]
    if spec.model.revision:
        env.append({"name": "VOICEFLEET_REVISION", "value": spec.model.revision})
    if spec.vram.budget:
        env.append({"name": "VOICEFLEET_VRAM_BUDGET", "value": spec.vram.budget})
    if spec.redis.managed:
        # Kubernetes expands $(VAR) only for variables defined earlier in the list.
        env.append(
            {
                "name": "VOICEFLEET_REDIS_PASSWORD",
                "valueFrom": {
                    "secretKeyRef": {
                        "name": naming.redis_name(name),
                        "key": naming.REDIS_PASSWORD_KEY,
                    }
                },
            }
        )
        env.append(
            {
                "name": "VOICEFLEET_REDIS_URL",
                "value": f"redis://:$(VOICEFLEET_REDIS_PASSWORD)@{naming.redis_name(name)}"
                f":{naming.REDIS_PORT}/0",
            }
        )
    elif spec.redis.url:
        env.append({"name": "VOICEFLEET_REDIS_URL", "value": spec.redis.url})
    if spec.auth is not None:
        # A path, never the key: the pod spec is readable by far more people than Secrets.
        env.append({"name": "VOICEFLEET_API_KEY_FILE", "value": f"{API_KEY_DIR}/{API_KEY_FILE}"})
    return env


def server_resources(spec: ServiceSpec) -> dict[str, Any]:
    requests = dict(spec.resources.requests)
    limits = dict(spec.resources.limits)
    if spec.autoscaling.metric == "cpu" and "cpu" not in requests:
        # CPU utilisation is measured against the request; without one the HPA cannot act.
        requests["cpu"] = "1"
    if spec.resources.gpus:
        # Extended resources are limits only (the request defaults to the limit); the API
        # returns quantities as strings, so build strings to keep `drift` exact.
        limits["nvidia.com/gpu"] = str(spec.resources.gpus)
    result: dict[str, Any] = {}
    if requests:
        result["requests"] = requests
    if limits:
        result["limits"] = limits
    return result


def server_deployment(spec: ServiceSpec, name: str, namespace: str) -> dict[str, Any]:
    """The GPU server pods. `replicas` is left out: the HPA owns it, patches must not fight."""
    http = {"port": "http"}
    container: dict[str, Any] = {
        "name": naming.SERVER,
        "image": spec.image,
        "command": ["voicefleet", "serve"],
        "ports": [{"name": "http", "containerPort": naming.SERVER_PORT, "protocol": "TCP"}],
        "env": server_env(spec, name),
        "resources": server_resources(spec),
        "startupProbe": {
            "httpGet": {"path": "/healthz", **http},
            "periodSeconds": STARTUP_PERIOD_SECONDS,
            "timeoutSeconds": 5,
            "failureThreshold": STARTUP_FAILURES,
        },
        "livenessProbe": {
            "httpGet": {"path": "/healthz", **http},
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        },
        # /readyz is 503 until the model is loaded and warm, while draining, and above the
        # memory watermark, so traffic only reaches pods that can take it.
        "readinessProbe": {
            "httpGet": {"path": "/readyz", **http},
            "periodSeconds": 5,
            "timeoutSeconds": 3,
            "failureThreshold": 2,
        },
        "lifecycle": {"preStop": {"sleep": {"seconds": PRESTOP_SLEEP_SECONDS}}},
        "volumeMounts": [{"name": "cache", "mountPath": CACHE_DIR}],
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    if spec.image_pull_policy:
        container["imagePullPolicy"] = spec.image_pull_policy
    volumes: list[dict[str, Any]] = [{"name": "cache", "emptyDir": {}}]
    if spec.auth is not None:
        container["volumeMounts"].append(
            {"name": API_KEY_VOLUME, "mountPath": API_KEY_DIR, "readOnly": True}
        )
        volumes.append(
            {
                "name": API_KEY_VOLUME,
                "secret": {
                    "secretName": spec.auth.secret,
                    "items": [{"key": spec.auth.key, "path": API_KEY_FILE}],
                },
            }
        )
    pod_spec: dict[str, Any] = {
        "terminationGracePeriodSeconds": PRESTOP_SLEEP_SECONDS
        + spec.drain_seconds
        + GRACE_SLACK_SECONDS,
        "containers": [container],
        "volumes": volumes,
    }
    if spec.node_selector:
        pod_spec["nodeSelector"] = dict(spec.node_selector)
    if spec.tolerations:
        pod_spec["tolerations"] = [dict(t) for t in spec.tolerations]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(naming.server_name(name), namespace, naming.SERVER, name),
        "spec": {
            "selector": {"matchLabels": naming.selector(name, naming.SERVER)},
            # Never drop below the current capacity during a rollout: surge one pod first.
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "template": {
                "metadata": {
                    "labels": naming.labels(name, naming.SERVER),
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(naming.SERVER_PORT),
                        "prometheus.io/path": "/metrics",
                    },
                },
                "spec": pod_spec,
            },
        },
    }


def server_service(spec: ServiceSpec, name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(naming.server_name(name), namespace, naming.SERVER, name),
        "spec": {
            "type": "ClusterIP",
            "selector": naming.selector(name, naming.SERVER),
            "ports": [
                {
                    "name": "http",
                    "port": naming.SERVER_PORT,
                    "targetPort": "http",
                    "protocol": "TCP",
                }
            ],
        },
    }


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
    # Audio-seconds waiting per pod: requests are a poor proxy for TTS work (one request
    # can be a sentence or a chapter). Needs a custom-metrics adapter serving it.
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
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _meta(naming.server_name(name), namespace, naming.SERVER, name),
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": naming.server_name(name),
            },
            "minReplicas": spec.autoscaling.min_replicas,
            "maxReplicas": spec.autoscaling.max_replicas,
            "metrics": [hpa_metric(spec)],
            "behavior": hpa_behavior(),
        },
    }


def server_pdb(spec: ServiceSpec, name: str, namespace: str) -> dict[str, Any]:
    """At most one server pod down by choice (drains, the memory guard's evictions).

    maxUnavailable rather than minAvailable: with one replica, minAvailable 1 would block
    every eviction forever, including the guard's.
    """
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(naming.server_name(name), namespace, naming.SERVER, name),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": naming.selector(name, naming.SERVER)},
        },
    }


def redis_secret(name: str, namespace: str, password: str) -> dict[str, Any]:
    """Created once with a random password; never patched, so running pods keep working."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _meta(naming.redis_name(name), namespace, naming.REDIS, name),
        "type": "Opaque",
        "stringData": {naming.REDIS_PASSWORD_KEY: password},
    }


def redis_deployment(
    spec: ServiceSpec, name: str, namespace: str, *, image: str
) -> dict[str, Any]:
    """A private, memory-only Redis: cache, job state and rate limits are all rebuildable."""
    container = {
        "name": naming.REDIS,
        "image": image,
        "args": [
            "redis-server",
            "--requirepass",
            "$(REDIS_PASSWORD)",
            "--save",
            "",
            "--appendonly",
            "no",
            "--maxmemory",
            "384mb",
            "--maxmemory-policy",
            "allkeys-lru",
        ],
        "env": [
            {
                "name": "REDIS_PASSWORD",
                "valueFrom": {
                    "secretKeyRef": {
                        "name": naming.redis_name(name),
                        "key": naming.REDIS_PASSWORD_KEY,
                    }
                },
            }
        ],
        "ports": [{"name": "redis", "containerPort": naming.REDIS_PORT, "protocol": "TCP"}],
        "readinessProbe": {"tcpSocket": {"port": "redis"}, "periodSeconds": 5},
        "livenessProbe": {"tcpSocket": {"port": "redis"}, "periodSeconds": 10},
        "resources": {
            "requests": {"cpu": "100m", "memory": "128Mi"},
            "limits": {"memory": "512Mi"},
        },
        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "runAsNonRoot": True,
            # The official image's `redis` user.
            "runAsUser": 999,
        },
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(naming.redis_name(name), namespace, naming.REDIS, name),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": naming.selector(name, naming.REDIS)},
            # Two Redis pods would split the cache and job state; replace, don't surge.
            "strategy": {"type": "Recreate"},
            "template": {
                "metadata": {"labels": naming.labels(name, naming.REDIS)},
                "spec": {
                    "containers": [container],
                    "volumes": [{"name": "data", "emptyDir": {}}],
                    "automountServiceAccountToken": False,
                },
            },
        },
    }


def redis_service(spec: ServiceSpec, name: str, namespace: str) -> dict[str, Any]:
    """ClusterIP only: Redis is reachable from inside the cluster, never exposed."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(naming.redis_name(name), namespace, naming.REDIS, name),
        "spec": {
            "type": "ClusterIP",
            "selector": naming.selector(name, naming.REDIS),
            "ports": [
                {
                    "name": "redis",
                    "port": naming.REDIS_PORT,
                    "targetPort": "redis",
                    "protocol": "TCP",
                }
            ],
        },
    }


def children(
    spec: ServiceSpec, name: str, namespace: str, *, redis_image: str
) -> list[dict[str, Any]]:
    """Every child that is created and then kept equal to its build (the Secret is not:
    see `redis_secret`). Redis comes first so the server finds it when it starts."""
    result: list[dict[str, Any]] = []
    if spec.redis.managed:
        result += [
            redis_deployment(spec, name, namespace, image=redis_image),
            redis_service(spec, name, namespace),
        ]
    result += [
        server_deployment(spec, name, namespace),
        server_service(spec, name, namespace),
        server_hpa(spec, name, namespace),
        server_pdb(spec, name, namespace),
    ]
    return result


def drift(desired: Any, actual: Any, path: str = "") -> list[str]:
    """Paths where `actual` differs from `desired`; empty when it still matches.

    Fields the API server adds (defaults, status, uid...) are ignored: only what `desired`
    says is compared. Lists must match item by item, so a hand-added env var is drift too.
    """
    if isinstance(desired, Mapping):
        if not isinstance(actual, Mapping):
            return [path or "."]
        found: list[str] = []
        for key, value in desired.items():
            found += drift(value, actual.get(key), f"{path}.{key}")
        return found
    if isinstance(desired, list):
        if not isinstance(actual, list) or len(actual) != len(desired):
            return [path or "."]
        found = []
        for index, (want, have) in enumerate(zip(desired, actual, strict=True)):
            found += drift(want, have, f"{path}[{index}]")
        return found
    if desired == actual:
        return []
    # Quantities and ports come back as strings or numbers depending on the field.
    if isinstance(desired, (int, str)) and isinstance(actual, (int, str)) and not isinstance(
        desired, bool
    ) and str(desired) == str(actual):
        return []
    return [path or "."]
