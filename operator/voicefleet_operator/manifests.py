"""Every child object of a VoiceService that is created and then kept equal to its build,
built by pure functions (checked spec + name in, plain dict out), plus `drift`, which tells
whether a live object still matches its build.

Nothing here talks to the API: handlers add ownerReferences (`kopf.adopt`) and create or
patch what these functions return. Unit tests assert on the dicts directly. The autoscaler
is `autoscalers`' and the model cache's Job and claim are `cache`'s; `spec.pod` merges in
through `pods`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from voicefleet_operator import autoscalers, cache, naming, pods
from voicefleet_operator.spec import ServiceSpec

# The preStop pause lets endpoint controllers and kube-proxy drop the pod from the Service
# before the server starts refusing work; the drain then only sees requests already inside.
PRESTOP_SLEEP_SECONDS = 5
# Slack after the drain for process exit and log flushing before SIGKILL.
GRACE_SLACK_SECONDS = 10
# Model downloads and warm-up can take minutes: allow 10 minutes before liveness counts.
STARTUP_PERIOD_SECONDS = 10
STARTUP_FAILURES = 60
CACHE_DIR = "/cache"
# The API key Secret is mounted as a directory (not subPath), so a rotated key reaches the
# running pods' file; only the one key is projected, as a fixed file name.
API_KEY_DIR = "/etc/voicefleet/auth"
API_KEY_FILE = "api-key"
API_KEY_VOLUME = "api-key"
# spec.storage.s3.credentialsSecretRef: the two keys as files named like boto3's variables
# (the server re-reads them when the Secret is rotated), never as env values.
S3_CREDENTIALS_DIR = "/etc/voicefleet/s3"
S3_CREDENTIALS_VOLUME = "s3-credentials"
# surge: never below the current capacity (one extra pod first, so one spare GPU);
# frugal: one pod down first, so a rollout never needs a GPU the service does not hold.
ROLLOUT = {
    "surge": {"maxSurge": 1, "maxUnavailable": 0},
    "frugal": {"maxSurge": 0, "maxUnavailable": 1},
}


def _meta(name: str, namespace: str, component: str, owner: str) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, "labels": naming.labels(owner, component)}


def server_env(spec: ServiceSpec, name: str) -> list[dict[str, Any]]:
    """The server's configuration: every `voicefleet serve` flag reads VOICEFLEET_<FLAG>.
    These are the operator's own; `spec.pod.env` adds to them but never replaces one."""
    target = cache.plan(spec, name)
    env: list[dict[str, Any]] = [
        {"name": "VOICEFLEET_MODEL", "value": target.load if target else spec.model.variant},
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
    if target is not None:
        env += cache.server_env(target)
    # A copied checkpoint is a path: it has no revision (the copy is of the one asked for).
    if spec.model.revision and (target is None or target.hub):
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
    if spec.storage is not None:
        env += storage_env(spec)
    return env


def storage_env(spec: ServiceSpec) -> list[dict[str, Any]]:
    """Job audio in S3: the server's setting, plus boto3's own variables for the endpoint and
    region (no credentials: a mounted Secret, or the pod's workload identity)."""
    s3 = spec.storage
    if s3 is None:
        return []
    env = [{"name": "VOICEFLEET_JOB_STORAGE", "value": s3.url}]
    if s3.endpoint_url:
        env.append({"name": "AWS_ENDPOINT_URL", "value": s3.endpoint_url})
    if s3.region:
        env.append({"name": "AWS_REGION", "value": s3.region})
    if s3.credentials_secret:
        env.append({"name": "VOICEFLEET_JOB_STORAGE_CREDENTIALS_DIR", "value": S3_CREDENTIALS_DIR})
    return env


def server_resources(spec: ServiceSpec) -> dict[str, Any]:
    requests = dict(spec.resources.requests)
    limits = dict(spec.resources.limits)
    if spec.autoscaling.metric == "cpu" and "cpu" not in requests:
        # CPU utilisation is measured against the request; without one no autoscaler acts.
        requests["cpu"] = "1"
    if spec.resources.gpus:
        # A whole GPU, a MIG slice or a time-sliced share, whichever resource the device
        # plugin advertises. Extended resources are limits only (the request defaults to
        # the limit); the API returns quantities as strings, so build strings for `drift`.
        limits[spec.resources.gpu_resource] = str(spec.resources.gpus)
    result: dict[str, Any] = {}
    if requests:
        result["requests"] = requests
    if limits:
        result["limits"] = limits
    return result


def _server_volumes(spec: ServiceSpec, name: str) -> tuple[list[dict[str, Any]],
                                                            list[dict[str, Any]]]:
    """(volumes, the server container's mounts) the operator itself needs."""
    volumes: list[dict[str, Any]] = [{"name": "cache", "emptyDir": {}}]
    mounts: list[dict[str, Any]] = [{"name": "cache", "mountPath": CACHE_DIR}]
    target = cache.plan(spec, name)
    if target is not None:
        volumes.append(cache.volume(target, read_only=True))
        mounts.append(cache.mount(read_only=True))
    if spec.auth is not None:
        mounts.append({"name": API_KEY_VOLUME, "mountPath": API_KEY_DIR, "readOnly": True})
        volumes.append(
            {
                "name": API_KEY_VOLUME,
                "secret": {
                    "secretName": spec.auth.secret,
                    "items": [{"key": spec.auth.key, "path": API_KEY_FILE}],
                },
            }
        )
    if spec.storage is not None and spec.storage.credentials_secret:
        s3 = spec.storage
        mounts.append(
            {"name": S3_CREDENTIALS_VOLUME, "mountPath": S3_CREDENTIALS_DIR, "readOnly": True}
        )
        volumes.append(
            {
                "name": S3_CREDENTIALS_VOLUME,
                "secret": {
                    "secretName": s3.credentials_secret,
                    "items": [
                        {"key": s3.access_key_id_key, "path": "AWS_ACCESS_KEY_ID"},
                        {"key": s3.secret_access_key_key, "path": "AWS_SECRET_ACCESS_KEY"},
                    ],
                },
            }
        )
    return volumes, mounts


def server_deployment(spec: ServiceSpec, name: str, namespace: str) -> dict[str, Any]:
    """The GPU server pods. `replicas` is set only when no autoscaler owns it (mode none):
    otherwise patches would fight the autoscaler."""
    http = {"port": "http"}
    volumes, mounts = _server_volumes(spec, name)
    container: dict[str, Any] = {
        "name": naming.SERVER,
        "image": spec.image,
        "command": ["voicefleet", "serve"],
        "ports": [{"name": "http", "containerPort": naming.SERVER_PORT, "protocol": "TCP"}],
        "env": pods.merged_env(server_env(spec, name), spec.pod),
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
        "volumeMounts": pods.merged_mounts(mounts, spec.pod),
        "securityContext": dict(pods.CONTAINER_SECURITY),
    }
    if spec.image_pull_policy:
        container["imagePullPolicy"] = spec.image_pull_policy
    pod_spec: dict[str, Any] = {
        "terminationGracePeriodSeconds": PRESTOP_SLEEP_SECONDS
        + spec.drain_seconds
        + GRACE_SLACK_SECONDS,
        "containers": [container],
        "volumes": pods.merged_volumes(volumes, spec.pod),
        "securityContext": pods.security_context(spec.pod),
        **pods.pod_fields(spec.pod, scheduling=True),
    }
    target = cache.plan(spec, name)
    if target is not None:
        pod_spec["initContainers"] = [cache.gate_container(spec, target)]
    if spec.node_selector:
        pod_spec["nodeSelector"] = dict(spec.node_selector)
    if spec.tolerations:
        pod_spec["tolerations"] = [dict(t) for t in spec.tolerations]
    deployment_spec: dict[str, Any] = {
        "selector": {"matchLabels": naming.selector(name, naming.SERVER)},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": dict(ROLLOUT[spec.rollout])},
        "template": {
            "metadata": {
                "labels": pods.merged_map(spec.pod.labels, naming.labels(name, naming.SERVER)),
                "annotations": pods.merged_map(spec.pod.annotations, {
                    "prometheus.io/scrape": "true",
                    "prometheus.io/port": str(naming.SERVER_PORT),
                    "prometheus.io/path": "/metrics",
                }),
            },
            "spec": pod_spec,
        },
    }
    if spec.autoscaling.mode == "none":
        deployment_spec["replicas"] = spec.replicas
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(naming.server_name(name), namespace, naming.SERVER, name),
        "spec": deployment_spec,
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


def redis_network_policy(spec: ServiceSpec, name: str, namespace: str) -> dict[str, Any]:
    """Only this service's server pods may reach its Redis (the password alone would let any
    pod in the cluster that learns it in). Needs a network plugin that enforces policies."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(naming.redis_name(name), namespace, naming.REDIS, name),
        "spec": {
            "podSelector": {"matchLabels": naming.selector(name, naming.REDIS)},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [{"podSelector": {
                        "matchLabels": naming.selector(name, naming.SERVER)}}],
                    "ports": [{"protocol": "TCP", "port": naming.REDIS_PORT}],
                }
            ],
        },
    }


def children(
    spec: ServiceSpec, name: str, namespace: str, *, redis_image: str
) -> list[dict[str, Any]]:
    """Every child that is created and then kept equal to its build (the Secret, the cache's
    claim and Job are not: see `redis_secret` and `cache`). Redis comes first so the server
    finds it when it starts; the autoscaler follows the Deployment it scales."""
    result: list[dict[str, Any]] = []
    if spec.redis.managed:
        result += [
            redis_deployment(spec, name, namespace, image=redis_image),
            redis_service(spec, name, namespace),
            redis_network_policy(spec, name, namespace),
        ]
    result += [
        server_deployment(spec, name, namespace),
        server_service(spec, name, namespace),
    ]
    autoscaler = autoscalers.wanted(spec, name, namespace)
    if autoscaler is not None:
        result.append(autoscaler)
    result.append(server_pdb(spec, name, namespace))
    return result


# What the operator last wrote to a child, so that a field it no longer builds (an init
# container when the cache goes, a user's affinity or security setting removed from
# spec.pod) is removed from the live object: a merge patch alone only adds and changes.
LAST_APPLIED = f"{naming.GROUP}/last-applied"
# Left as they are when no longer built: a Deployment's replicas pass from spec.replicas to
# the autoscaler at the current count, not reset to one.
KEPT_ON_REMOVAL = {("spec", "replicas")}


def with_last_applied(desired: Mapping[str, Any]) -> dict[str, Any]:
    """`desired` carrying itself, compactly, in the LAST_APPLIED annotation."""
    body = json.dumps(desired, sort_keys=True, separators=(",", ":"))
    meta = dict(desired.get("metadata") or {})
    meta["annotations"] = {**(meta.get("annotations") or {}), LAST_APPLIED: body}
    return {**desired, "metadata": meta}


def last_applied(live: Mapping[str, Any]) -> dict[str, Any] | None:
    raw = ((live.get("metadata") or {}).get("annotations") or {}).get(LAST_APPLIED)
    try:
        found = json.loads(raw) if raw else None
    except ValueError:
        return None
    return found if isinstance(found, dict) else None


def removals(last: Mapping[str, Any], desired: Mapping[str, Any],
             path: tuple[str, ...] = ()) -> dict[str, Any]:
    """A merge-patch fragment of nulls for every key the operator wrote last time (`last`)
    but builds no more; lists are replaced whole by a merge patch, so only maps are walked."""
    patch: dict[str, Any] = {}
    for key, value in last.items():
        where = (*path, key)
        if key not in desired:
            if where not in KEPT_ON_REMOVAL:
                patch[key] = None
                if key == "serviceAccountName":
                    # The API server copies the deprecated twin back into a nulled name.
                    patch["serviceAccount"] = None
        elif (
            isinstance(value, Mapping)
            and isinstance(desired[key], Mapping)
            and (nested := removals(value, desired[key], where))
        ):
            patch[key] = nested
    return patch


def present(nulls: Mapping[str, Any], live: Any) -> dict[str, Any]:
    """The part of `nulls` whose keys the live object still has."""
    if not isinstance(live, Mapping):
        return {}
    out: dict[str, Any] = {}
    for key, value in nulls.items():
        if key not in live:
            continue
        if isinstance(value, Mapping):
            if nested := present(value, live[key]):
                out[key] = nested
        else:
            out[key] = None
    return out


def merge_patch(desired: Mapping[str, Any], nulls: Mapping[str, Any]) -> dict[str, Any]:
    """`desired` with `nulls` (from `removals`) laid into it."""
    out = dict(desired)
    for key, value in nulls.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge_patch(out[key], value)
        else:
            out[key] = value
    return out


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
