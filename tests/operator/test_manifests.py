"""Builders: plain dict assertions, plus the real Kubernetes 1.37 schemas (strict)."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
from voicefleet_operator import autoscalers, manifests
from voicefleet_operator.spec import ServiceSpec, parse_spec

IMAGE = "example.test/server:1"
LABELS = {
    "app.kubernetes.io/managed-by": "voicefleet",
    "voicefleet.dev/service": "tts",
}


def make(**raw: Any) -> ServiceSpec:
    raw.setdefault("model", {"variant": "facebook/mms-tts-eng"})
    return parse_spec(raw, default_image=IMAGE)


def env_of(deployment: dict[str, Any]) -> dict[str, Any]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_server_deployment_env_from_spec() -> None:
    spec = make(
        model={"variant": "facebook/mms-tts-eng", "revision": "v2", "dtype": "float16"},
        batching={"windowMs": 25, "maxBatchSize": 32, "maxQueue": 100},
        vram={"budget": "8Gi"},
        drainSeconds=40,
    )
    env = env_of(manifests.server_deployment(spec, "tts", "speech"))
    assert env["VOICEFLEET_MODEL"] == "facebook/mms-tts-eng"
    assert env["VOICEFLEET_REVISION"] == "v2"
    assert env["VOICEFLEET_DTYPE"] == "float16"
    assert env["VOICEFLEET_PORT"] == "8000"
    assert env["VOICEFLEET_BATCH_WINDOW_MS"] == "25"
    assert env["VOICEFLEET_MAX_BATCH_SIZE"] == "32"
    assert env["VOICEFLEET_MAX_QUEUE"] == "100"
    assert env["VOICEFLEET_VRAM_BUDGET"] == "8Gi"
    assert env["VOICEFLEET_DRAIN_SECONDS"] == "40"
    assert env["VOICEFLEET_DEVICE"] == "auto"


def test_managed_redis_url_uses_secret_password_defined_first() -> None:
    deployment = manifests.server_deployment(make(), "tts", "speech")
    env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    names = [e["name"] for e in env]
    # $(VAR) expands only for variables defined earlier in the list.
    assert names.index("VOICEFLEET_REDIS_PASSWORD") < names.index("VOICEFLEET_REDIS_URL")
    by_name = {e["name"]: e for e in env}
    assert by_name["VOICEFLEET_REDIS_PASSWORD"]["valueFrom"] == {
        "secretKeyRef": {"name": "tts-redis", "key": "password"}
    }
    assert by_name["VOICEFLEET_REDIS_URL"]["value"] == (
        "redis://:$(VOICEFLEET_REDIS_PASSWORD)@tts-redis:6379/0"
    )


def test_external_or_no_redis() -> None:
    spec = make(redis={"url": "redis://r:6379/2"})
    external = env_of(manifests.server_deployment(spec, "t", "n"))
    assert external["VOICEFLEET_REDIS_URL"] == "redis://r:6379/2"
    assert "VOICEFLEET_REDIS_PASSWORD" not in external
    none = env_of(manifests.server_deployment(make(redis={"enabled": False}), "t", "n"))
    assert "VOICEFLEET_REDIS_URL" not in none


def test_server_pod_shape() -> None:
    spec = make(
        resources={"gpus": 1, "requests": {"cpu": "2"}, "limits": {"memory": "16Gi"}},
        nodeSelector={"pool": "gpu"},
        tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        drainSeconds=30,
    )
    deployment = manifests.server_deployment(spec, "tts", "speech")
    assert deployment["metadata"]["name"] == "tts"
    assert deployment["metadata"]["namespace"] == "speech"
    assert LABELS.items() <= deployment["metadata"]["labels"].items()
    assert "replicas" not in deployment["spec"]  # the HPA owns it
    # surge (the default): one pod more first, never one fewer.
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    template = deployment["spec"]["template"]
    assert LABELS.items() <= template["metadata"]["labels"].items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= template["metadata"][
        "labels"
    ].items()
    assert template["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "8000",
        "prometheus.io/path": "/metrics",
    }
    pod = template["spec"]
    assert pod["nodeSelector"] == {"pool": "gpu"}
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    container = pod["containers"][0]
    assert container["image"] == IMAGE
    assert container["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    assert container["resources"] == {
        "requests": {"cpu": "2"},
        "limits": {"memory": "16Gi", "nvidia.com/gpu": "1"},
    }
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300  # slow model loads
    # Drain: the preStop pause plus the drain fit inside the grace period.
    pause = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] > pause + 30


def test_cpu_only_pods_have_no_gpu_limit() -> None:
    resources = manifests.server_resources(make(resources={"gpus": 0}))
    assert resources == {}


def test_hpa_default_metric_is_queued_audio_seconds() -> None:
    hpa = autoscalers.server_hpa(make(autoscaling={"minReplicas": 2, "maxReplicas": 6}), "tts",
                                 "ns")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "tts",
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    assert hpa["spec"]["metrics"] == [
        {
            "type": "Pods",
            "pods": {
                "metric": {"name": "voicefleet_queued_audio_seconds"},
                "target": {"type": "AverageValue", "averageValue": "30"},
            },
        }
    ]


def test_hpa_cpu_fallback_sets_a_cpu_request() -> None:
    spec = make(autoscaling={"metric": "cpu", "target": 60})
    hpa = autoscalers.server_hpa(spec, "tts", "ns")
    assert hpa["spec"]["metrics"] == [
        {
            "type": "Resource",
            "resource": {
                "name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 60},
            },
        }
    ]
    container = manifests.server_deployment(spec, "tts", "ns")["spec"]["template"]["spec"][
        "containers"
    ][0]
    assert container["resources"]["requests"]["cpu"] == "1"


def test_service_and_pdb_select_server_pods_only() -> None:
    spec = make()
    service = manifests.server_service(spec, "tts", "ns")
    pdb = manifests.server_pdb(spec, "tts", "ns")
    selector = {"voicefleet.dev/service": "tts", "app.kubernetes.io/component": "server"}
    assert service["spec"]["selector"] == selector
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"][0]["port"] == 8000
    assert pdb["spec"] == {"maxUnavailable": 1, "selector": {"matchLabels": selector}}


def test_redis_children() -> None:
    spec = make()
    secret = manifests.redis_secret("tts", "ns", "s3cret")
    assert secret["stringData"] == {"password": "s3cret"}
    deployment = manifests.redis_deployment(spec, "tts", "ns", image="redis:7.4-alpine")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "redis:7.4-alpine"
    assert container["args"][:3] == ["redis-server", "--requirepass", "$(REDIS_PASSWORD)"]
    assert container["env"][0]["valueFrom"]["secretKeyRef"] == {
        "name": "tts-redis",
        "key": "password",
    }
    service = manifests.redis_service(spec, "tts", "ns")
    assert service["spec"]["type"] == "ClusterIP"  # never exposed outside the cluster
    assert service["spec"]["selector"] == {
        "voicefleet.dev/service": "tts",
        "app.kubernetes.io/component": "redis",
    }


def test_children_follow_redis_mode() -> None:
    def kinds(spec: ServiceSpec) -> list[tuple[str, str]]:
        built = manifests.children(spec, "tts", "ns", redis_image="r")
        return [(c["kind"], c["metadata"]["name"]) for c in built]

    server = [
        ("Deployment", "tts"),
        ("Service", "tts"),
        ("HorizontalPodAutoscaler", "tts"),
        ("PodDisruptionBudget", "tts"),
    ]
    assert kinds(make()) == [("Deployment", "tts-redis"), ("Service", "tts-redis"),
                             ("NetworkPolicy", "tts-redis"), *server]
    assert kinds(make(redis={"url": "redis://x"})) == server
    assert kinds(make(redis={"enabled": False})) == server


@pytest.mark.parametrize(
    "raw",
    [
        {},
        {"autoscaling": {"metric": "cpu"}, "resources": {"gpus": 0}},
        {
            "vram": {"budget": "8Gi"},
            "redis": {"url": "redis://r"},
            "imagePullPolicy": "Always",
            "tolerations": [{"key": "k", "operator": "Equal", "value": "v", "effect": "NoExecute",
                             "tolerationSeconds": 30}],
            "resources": {"requests": {"cpu": "500m", "memory": "4Gi"}},
            "auth": {"apiKeySecretRef": {"name": "tts-keys", "key": "key"}},
        },
    ],
)
def test_children_pass_kubernetes_strict_validation(raw: dict[str, Any]) -> None:
    spec = make(**raw)
    objects = [*manifests.children(spec, "tts", "ns", redis_image="redis:7.4-alpine"),
               manifests.redis_secret("tts", "ns", "pw")]
    for obj in objects:
        kubernetes_validate.validate(obj, "1.37.0", strict=True)


def test_drift_compares_only_what_we_build() -> None:
    desired = {"spec": {"replicas": 1, "ports": [{"port": 80, "name": "http"}], "q": "2"}}
    live = {
        "metadata": {"uid": "u", "resourceVersion": "7"},
        "spec": {"replicas": 1, "ports": [{"port": 80, "name": "http", "protocol": "TCP"}],
                 "q": 2, "extra": True},
        "status": {"x": 1},
    }
    assert manifests.drift(desired, live) == []
    live["spec"]["replicas"] = 3
    assert manifests.drift(desired, live) == [".spec.replicas"]
    live["spec"]["replicas"] = 1
    live["spec"]["ports"].append({"port": 81})
    assert manifests.drift(desired, live) == [".spec.ports"]
    assert manifests.drift(desired, {}) == [".spec"]


def test_api_key_secret_is_mounted_and_pointed_at() -> None:
    plain = manifests.server_deployment(make(), "tts", "ns")
    assert "VOICEFLEET_API_KEY_FILE" not in env_of(plain)
    assert "VOICEFLEET_API_KEY" not in env_of(plain)

    spec = make(auth={"apiKeySecretRef": {"name": "tts-keys", "key": "openai"}})
    deployment = manifests.server_deployment(spec, "tts", "ns")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = env_of(deployment)
    assert env["VOICEFLEET_API_KEY_FILE"] == "/etc/voicefleet/auth/api-key"
    # The key itself never appears in the pod spec, as a value or as a secretKeyRef env.
    assert "VOICEFLEET_API_KEY" not in env
    assert {"name": "api-key", "mountPath": "/etc/voicefleet/auth", "readOnly": True} in (
        container["volumeMounts"])
    assert {"name": "api-key", "secret": {
        "secretName": "tts-keys", "items": [{"key": "openai", "path": "api-key"}]}} in (
        pod["volumes"])
    # Turning auth off again removes both (lists are replaced whole by the merge patch).
    assert manifests.drift(plain, deployment)


def test_s3_job_storage_reaches_the_pods_as_settings_and_a_mounted_secret() -> None:
    plain = manifests.server_deployment(make(), "tts", "ns")
    assert not {"VOICEFLEET_JOB_STORAGE", "AWS_ENDPOINT_URL", "AWS_REGION"} & set(env_of(plain))

    spec = make(storage={"s3": {
        "bucket": "voicefleet-jobs", "prefix": "/tts-en/", "endpointUrl": "http://minio:9000",
        "region": "eu-west-1",
        "credentialsSecretRef": {"name": "minio-keys", "accessKeyIdKey": "rootUser",
                                 "secretAccessKeyKey": "rootPassword"}}})
    deployment = manifests.server_deployment(spec, "tts", "ns")
    pod = deployment["spec"]["template"]["spec"]
    env = env_of(deployment)
    assert env["VOICEFLEET_JOB_STORAGE"] == "s3://voicefleet-jobs/tts-en"
    assert env["AWS_ENDPOINT_URL"] == "http://minio:9000"
    assert env["AWS_REGION"] == "eu-west-1"
    assert env["VOICEFLEET_JOB_STORAGE_CREDENTIALS_DIR"] == "/etc/voicefleet/s3"
    # The keys are files in a read-only mount, named as the server reads them; never env.
    assert "AWS_ACCESS_KEY_ID" not in env and "AWS_SECRET_ACCESS_KEY" not in env
    assert {"name": "s3-credentials", "mountPath": "/etc/voicefleet/s3", "readOnly": True} in (
        pod["containers"][0]["volumeMounts"])
    assert {"name": "s3-credentials", "secret": {"secretName": "minio-keys", "items": [
        {"key": "rootUser", "path": "AWS_ACCESS_KEY_ID"},
        {"key": "rootPassword", "path": "AWS_SECRET_ACCESS_KEY"}]}} in pod["volumes"]
    kubernetes_validate.validate(deployment, "1.37.0", strict=True)

    # Workload identity: no Secret, no mount, no endpoint (AWS itself).
    identity = manifests.server_deployment(
        make(storage={"s3": {"bucket": "voicefleet-jobs"}}, pod={"serviceAccountName": "tts"}),
        "tts", "ns")
    env = env_of(identity)
    assert env["VOICEFLEET_JOB_STORAGE"] == "s3://voicefleet-jobs"
    assert not {"AWS_ENDPOINT_URL", "AWS_REGION", "VOICEFLEET_JOB_STORAGE_CREDENTIALS_DIR"} & set(
        env)
    assert all(v["name"] != "s3-credentials" for v in identity["spec"]["template"]["spec"][
        "volumes"])
    # Removing the storage again changes the pods (lists are replaced whole by the patch).
    assert manifests.drift(plain, deployment)


def test_the_server_accepts_the_storage_settings_the_operator_sets() -> None:
    from voicefleet_server.cli import settings_from

    spec = make(storage={"s3": {"bucket": "voicefleet-jobs", "prefix": "tts",
                                "credentialsSecretRef": {"name": "keys"}}},
                redis={"url": "redis://r:6379/0"})
    env = {k: v for k, v in env_of(manifests.server_deployment(spec, "tts", "ns")).items()
           if k.startswith("VOICEFLEET_") and isinstance(v, str)}
    settings = settings_from([], env)
    assert settings.job_storage == "s3://voicefleet-jobs/tts"
    assert settings.job_storage_credentials_dir == "/etc/voicefleet/s3"


def test_pod_settings_cannot_replace_the_storage_settings() -> None:
    spec = make(storage={"s3": {"bucket": "voicefleet-jobs", "credentialsSecretRef": {
        "name": "keys"}}}, pod={
        "env": [{"name": "VOICEFLEET_JOB_STORAGE", "value": "memory"},
                {"name": "VOICEFLEET_JOB_URL_TTL", "value": "2h"}],
        "volumeMounts": [{"name": "mine", "mountPath": "/etc/voicefleet/s3"}],
        "volumes": [{"name": "mine", "emptyDir": {}}]})
    deployment = manifests.server_deployment(spec, "tts", "ns")
    env = env_of(deployment)
    assert env["VOICEFLEET_JOB_STORAGE"] == "s3://voicefleet-jobs"
    assert env["VOICEFLEET_JOB_URL_TTL"] == "2h"  # what the operator does not set passes
    mounts = deployment["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    assert [m["name"] for m in mounts if m["mountPath"] == "/etc/voicefleet/s3"] == [
        "s3-credentials"]


def test_what_the_operator_no_longer_builds_is_removed() -> None:
    cached = make(model={"variant": "m/x", "cache": {}}, autoscaling={"mode": "none"},
                  pod={"affinity": {"nodeAffinity": {}}, "serviceAccountName": "sa",
                       "securityContext": {"runAsUser": 5}})
    plain = make()
    before = manifests.with_last_applied(manifests.server_deployment(cached, "tts", "ns"))
    after = manifests.with_last_applied(manifests.server_deployment(plain, "tts", "ns"))
    last = manifests.last_applied(before)
    assert last is not None and manifests.LAST_APPLIED not in str(last)  # no nesting
    nulls = manifests.removals(last, after)
    assert nulls == {"spec": {"template": {"spec": {
        "initContainers": None, "affinity": None, "serviceAccountName": None,
        "serviceAccount": None, "securityContext": {"runAsUser": None}}}}}
    # replicas pass to the autoscaler as they are, not reset.
    assert "replicas" not in nulls["spec"]
    # Only keys still there are sent; the patch is the build with the nulls laid in.
    live = {"spec": {"template": {"spec": {"initContainers": [], "serviceAccountName": "sa",
                                           "securityContext": {"runAsUser": 5}}}}}
    kept = manifests.present(nulls, live)
    assert kept == {"spec": {"template": {"spec": {
        "initContainers": None, "serviceAccountName": None,
        "securityContext": {"runAsUser": None}}}}}
    patch = manifests.merge_patch(after, kept)
    assert patch["spec"]["template"]["spec"]["initContainers"] is None
    assert patch["spec"]["template"]["spec"]["securityContext"] == {
        "runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}, "runAsUser": None}
    assert patch["spec"]["template"]["spec"]["containers"] == after["spec"]["template"][
        "spec"]["containers"]
    assert manifests.removals(manifests.last_applied(after) or {}, after) == {}
