"""Builders of issue 16's features, with plain dict assertions: the model cache (claim, fetch
Job, the pod's gate and mounts), spec.pod merged under our own settings, the autoscaler per
mode, GPU resources, rollout strategies and the Redis NetworkPolicy. Every build also
passes the real Kubernetes 1.37 schemas (strict) and repeats no list-map key."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
from k8s_lists import duplicate_list_map_keys
from voicefleet_operator import autoscalers, cache, manifests
from voicefleet_operator.spec import ServiceSpec, parse_spec

from voicefleet import modelcache

IMAGE = "example.test/server:1"
HUB_CACHE = {"size": "20Gi", "storageClassName": "fast-rwx"}


def make(**raw: Any) -> ServiceSpec:
    raw.setdefault("model", {"variant": "facebook/mms-tts-eng"})
    return parse_spec(raw, default_image=IMAGE)


def pod_of(deployment: dict[str, Any]) -> dict[str, Any]:
    return deployment["spec"]["template"]["spec"]


def env_list(container: dict[str, Any]) -> list[tuple[str, Any]]:
    return [(e["name"], e.get("value", e.get("valueFrom"))) for e in container["env"]]


def valid(*objects: dict[str, Any] | None) -> None:
    for obj in objects:
        assert obj is not None
        kubernetes_validate.validate(obj, "1.37.0", strict=True)
        assert duplicate_list_map_keys(obj) == [], obj["kind"]


# --- model cache ---------------------------------------------------------------------

def test_cache_claim_and_fetch_job_for_a_hub_model() -> None:
    spec = make(model={"variant": "facebook/mms-tts-eng", "revision": "v2", "cache": HUB_CACHE})
    slot = modelcache.slot_name("facebook/mms-tts-eng", "v2")
    claim = cache.claim(spec, "tts", "speech")
    assert claim is not None
    assert claim["metadata"]["name"] == "tts-models"
    assert claim["spec"] == {"accessModes": ["ReadWriteMany"],
                             "resources": {"requests": {"storage": "20Gi"}},
                             "storageClassName": "fast-rwx"}
    job = cache.fetch_job(spec, "tts", "speech")
    assert job is not None
    assert job["metadata"]["name"] == "tts-model-fetch"
    assert job["metadata"]["annotations"] == {cache.SLOT_ANNOTATION: slot}
    assert job["spec"]["backoffLimit"] == cache.FETCH_BACKOFF_LIMIT
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    (container,) = pod["containers"]
    assert container["command"] == ["voicefleet", "fetch-model", "--model",
                                    "facebook/mms-tts-eng", "--revision", "v2",
                                    "--dir", f"/models/{slot}"]
    # The Job writes; its image may say offline, the fetch must not be.
    assert {"name": "models", "mountPath": "/models"} in container["volumeMounts"]
    assert ("HF_HUB_OFFLINE", "0") in env_list(container)
    assert {"name": "models", "persistentVolumeClaim": {"claimName": "tts-models"}} in (
        pod["volumes"])
    # Non-root, yet able to write to a fresh volume; no GPU asked for.
    assert pod["securityContext"] == {"runAsNonRoot": True,
                                      "seccompProfile": {"type": "RuntimeDefault"},
                                      "fsGroup": 10001, "fsGroupChangePolicy": "OnRootMismatch"}
    assert "nvidia.com/gpu" not in str(container["resources"])
    valid(claim, job)


def test_server_pods_wait_for_the_cache_and_load_offline_by_hub_id() -> None:
    spec = make(model={"variant": "facebook/mms-tts-eng", "revision": "v2", "cache": HUB_CACHE})
    slot = modelcache.slot_name("facebook/mms-tts-eng", "v2")
    deployment = manifests.server_deployment(spec, "tts", "speech")
    pod = pod_of(deployment)
    (gate,) = pod["initContainers"]
    assert gate["command"] == ["voicefleet", "fetch-model", "--model", "facebook/mms-tts-eng",
                               "--revision", "v2", "--dir", f"/models/{slot}", "--wait"]
    assert gate["volumeMounts"] == [{"name": "models", "mountPath": "/models", "readOnly": True}]
    assert {"name": "models", "persistentVolumeClaim": {"claimName": "tts-models",
                                                        "readOnly": True}} in pod["volumes"]
    server = pod["containers"][0]
    assert {"name": "models", "mountPath": "/models", "readOnly": True} in server["volumeMounts"]
    env = dict(env_list(server))
    # Loaded by its id, so clients keep sending the same `model`; the files come from the
    # Hub layout in the cache, and nothing is downloaded.
    assert env["VOICEFLEET_MODEL"] == "facebook/mms-tts-eng"
    assert env["VOICEFLEET_REVISION"] == "v2"
    assert env["HF_HUB_CACHE"] == f"/models/{slot}"
    assert env["HF_HUB_OFFLINE"] == "1"
    valid(deployment)


def test_a_local_checkpoint_is_served_from_its_copy() -> None:
    spec = make(model={"variant": "/opt/models/tiny-vits", "revision": "ignored",
                       "cache": {"existingClaim": "shared-models"}})
    assert cache.claim(spec, "tts", "ns") is None  # theirs, not ours
    slot = modelcache.slot_name("/opt/models/tiny-vits", "ignored")
    env = dict(env_list(pod_of(manifests.server_deployment(spec, "tts", "ns"))["containers"][0]))
    assert env["VOICEFLEET_MODEL"] == f"/models/{slot}/tiny-vits"
    assert "VOICEFLEET_REVISION" not in env and "HF_HUB_CACHE" not in env
    job = cache.fetch_job(spec, "tts", "ns")
    assert job is not None
    assert {"name": "models", "persistentVolumeClaim": {"claimName": "shared-models"}} in (
        job["spec"]["template"]["spec"]["volumes"])


def test_without_a_cache_nothing_of_it_is_built() -> None:
    spec = make()
    assert cache.plan(spec, "tts") is None
    assert cache.claim(spec, "tts", "ns") is None and cache.fetch_job(spec, "tts", "ns") is None
    pod = pod_of(manifests.server_deployment(spec, "tts", "ns"))
    assert "initContainers" not in pod
    assert [v["name"] for v in pod["volumes"]] == ["cache"]
    assert "HF_HUB_OFFLINE" not in dict(env_list(pod["containers"][0]))


def test_a_new_revision_needs_a_new_job() -> None:
    old = cache.fetch_job(make(model={"variant": "m/x", "revision": "a", "cache": {}}), "t", "n")
    same = cache.fetch_job(make(model={"variant": "m/x", "revision": "a", "cache": {},
                                       "dtype": "float16"}), "t", "n")
    new = cache.fetch_job(make(model={"variant": "m/x", "revision": "b", "cache": {}}), "t", "n")
    other = cache.fetch_job(make(model={"variant": "m/y", "revision": "a", "cache": {}}), "t", "n")
    assert old is not None and same is not None and new is not None and other is not None
    assert not cache.job_outdated(same, old)
    assert cache.job_outdated(new, old) and cache.job_outdated(other, old)


def test_job_state() -> None:
    assert cache.job_state(None) == ("missing", "")
    assert cache.job_state({"status": {"active": 1}}) == ("running", "")
    assert cache.job_state({"status": {"succeeded": 1}}) == ("succeeded", "")
    failed = {"status": {"failed": 5, "conditions": [
        {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
         "message": "Job has reached the specified backoff limit"}]}}
    assert cache.job_state(failed) == ("failed", "Job has reached the specified backoff limit")


# --- spec.pod -----------------------------------------------------------------------------

POD = {
    "imagePullSecrets": [{"name": "regcred"}],
    "annotations": {"team": "speech", "prometheus.io/port": "9999"},
    "labels": {"cost-centre": "tts", "voicefleet.dev/service": "hijack"},
    "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [
            {"key": "gpu", "operator": "In", "values": ["l4"]}]}]}}},
    "priorityClassName": "tts-critical",
    "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                                   "whenUnsatisfiable": "ScheduleAnyway",
                                   "labelSelector": {"matchLabels": {
                                       "voicefleet.dev/service": "tts"}}}],
    "runtimeClassName": "nvidia",
    "serviceAccountName": "tts-server",
    "env": [{"name": "HTTPS_PROXY", "value": "http://proxy:3128"},
            {"name": "VOICEFLEET_MODEL", "value": "hijack"},
            {"name": "VOICEFLEET_RATE_LIMIT_RPS", "value": "5"}],
    "volumes": [{"name": "cache", "emptyDir": {"medium": "Memory"}},
                {"name": "certs", "configMap": {"name": "ca-bundle"}}],
    "volumeMounts": [{"name": "certs", "mountPath": "/etc/ssl/extra", "readOnly": True},
                     {"name": "certs", "mountPath": "/cache"}],
    "securityContext": {"runAsUser": 2000, "runAsNonRoot": False},
}


def test_pod_settings_reach_the_server_pods_and_ours_win_conflicts() -> None:
    deployment = manifests.server_deployment(make(pod=POD), "tts", "ns")
    template = deployment["spec"]["template"]
    assert template["metadata"]["labels"]["cost-centre"] == "tts"
    assert template["metadata"]["labels"]["voicefleet.dev/service"] == "tts"  # ours
    assert template["metadata"]["annotations"]["team"] == "speech"
    assert template["metadata"]["annotations"]["prometheus.io/port"] == "8000"  # ours
    pod = template["spec"]
    for key in ("imagePullSecrets", "affinity", "priorityClassName",
                "topologySpreadConstraints", "runtimeClassName", "serviceAccountName"):
        assert pod[key] == POD[key], key
    container = pod["containers"][0]
    env = env_list(container)
    assert ("HTTPS_PROXY", "http://proxy:3128") in env
    assert ("VOICEFLEET_RATE_LIMIT_RPS", "5") in env
    assert ("VOICEFLEET_MODEL", "facebook/mms-tts-eng") in env
    assert ("VOICEFLEET_MODEL", "hijack") not in env
    # Theirs after ours: a $(VAR) of theirs may refer to ours.
    assert [n for n, _ in env][-2:] == ["HTTPS_PROXY", "VOICEFLEET_RATE_LIMIT_RPS"]
    assert {"name": "cache", "emptyDir": {}} in pod["volumes"]  # ours
    assert {"name": "certs", "configMap": {"name": "ca-bundle"}} in pod["volumes"]
    mounts = container["volumeMounts"]
    assert {"name": "certs", "mountPath": "/etc/ssl/extra", "readOnly": True} in mounts
    assert {"name": "cache", "mountPath": "/cache"} in mounts  # /cache stays ours
    assert {"name": "certs", "mountPath": "/cache"} not in mounts
    # Pod level: their keys over our defaults; the container keeps its own hardening.
    assert pod["securityContext"] == {"runAsNonRoot": False, "runAsUser": 2000,
                                      "seccompProfile": {"type": "RuntimeDefault"}}
    assert container["securityContext"] == {"allowPrivilegeEscalation": False,
                                            "capabilities": {"drop": ["ALL"]}}
    valid(deployment)


def test_pod_settings_the_fetch_job_takes() -> None:
    spec = make(pod=POD, model={"variant": "m/x", "cache": {}},
                nodeSelector={"pool": "gpu"})
    job = cache.fetch_job(spec, "tts", "ns")
    assert job is not None
    pod = job["spec"]["template"]["spec"]
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["serviceAccountName"] == "tts-server"
    assert pod["nodeSelector"] == {"pool": "gpu"}
    # No GPU wanted: no GPU runtime, affinity or spread of the server pods.
    assert not {"runtimeClassName", "affinity", "topologySpreadConstraints"} & set(pod)
    env = dict(env_list(pod["containers"][0]))
    assert env["HTTPS_PROXY"] == "http://proxy:3128"  # downloads go through the proxy
    assert pod["securityContext"]["runAsUser"] == 2000
    assert pod["securityContext"]["fsGroup"] == 10001
    valid(job)


# --- autoscaling modes, scale, GPUs, rollouts, Redis isolation ----------------------------

def kinds(spec: ServiceSpec) -> list[str]:
    return [c["kind"] for c in manifests.children(spec, "tts", "ns", redis_image="r")]


def test_one_autoscaler_per_mode_and_replicas_only_without_one() -> None:
    url = "http://prometheus.monitoring:9090"
    hpa = make()
    keda = make(autoscaling={"mode": "keda", "prometheusUrl": url})
    none = make(autoscaling={"mode": "none"}, replicas=3)
    assert "HorizontalPodAutoscaler" in kinds(hpa) and "ScaledObject" not in kinds(hpa)
    assert "ScaledObject" in kinds(keda) and "HorizontalPodAutoscaler" not in kinds(keda)
    assert not {"ScaledObject", "HorizontalPodAutoscaler"} & set(kinds(none))
    assert "replicas" not in manifests.server_deployment(hpa, "tts", "ns")["spec"]
    assert "replicas" not in manifests.server_deployment(keda, "tts", "ns")["spec"]
    assert manifests.server_deployment(none, "tts", "ns")["spec"]["replicas"] == 3
    assert manifests.server_deployment(make(autoscaling={"mode": "none"}), "t", "n")["spec"][
        "replicas"] == 1
    assert [k for _, _, k in autoscalers.retired(hpa)] == ["ScaledObject"]
    assert [k for _, _, k in autoscalers.retired(keda)] == ["HorizontalPodAutoscaler"]
    assert [k for _, _, k in autoscalers.retired(none)] == ["HorizontalPodAutoscaler",
                                                            "ScaledObject"]


def test_keda_scaled_object_scales_like_the_hpa() -> None:
    url = "http://prometheus.monitoring:9090"
    spec = make(autoscaling={"mode": "keda", "prometheusUrl": url, "minReplicas": 2,
                             "maxReplicas": 9, "target": "12.5"})
    scaled = autoscalers.server_scaled_object(spec, "tts", "speech")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert scaled["metadata"]["name"] == "tts"
    body = scaled["spec"]
    assert body["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                      "name": "tts"}
    assert (body["minReplicaCount"], body["maxReplicaCount"]) == (2, 9)
    assert body["advanced"]["horizontalPodAutoscalerConfig"]["behavior"] == (
        autoscalers.server_hpa(spec, "tts", "speech")["spec"]["behavior"])
    assert body["triggers"] == [{
        "type": "prometheus", "metricType": "AverageValue",
        "metadata": {
            "serverAddress": url,
            "query": 'sum(voicefleet_queued_audio_seconds{namespace="speech",'
                     'voicefleet_dev_service="tts"})',
            "threshold": "12.5", "ignoreNullValues": "true",
        },
    }]
    cpu = make(autoscaling={"mode": "keda", "metric": "cpu", "target": 60})
    assert autoscalers.server_scaled_object(cpu, "tts", "ns")["spec"]["triggers"] == [
        {"type": "cpu", "metricType": "Utilization", "metadata": {"value": "60"}}]


@pytest.mark.parametrize(("resource", "count"), [("nvidia.com/gpu", "1"),
                                                 ("nvidia.com/mig-1g.10gb", "1"),
                                                 ("nvidia.com/gpu.shared", "1")])
def test_gpu_resource_names_the_limit(resource: str, count: str) -> None:
    spec = make(resources={"gpuResource": resource})
    assert manifests.server_resources(spec) == {"limits": {resource: count}}
    valid(manifests.server_deployment(spec, "tts", "ns"))


def test_rollout_strategies() -> None:
    def rolling(**raw: Any) -> dict[str, Any]:
        strategy = manifests.server_deployment(make(**raw), "t", "n")["spec"]["strategy"]
        assert strategy["type"] == "RollingUpdate"
        return dict(strategy["rollingUpdate"])

    assert rolling() == {"maxSurge": 1, "maxUnavailable": 0}
    assert rolling(rollout={"strategy": "surge"}) == {"maxSurge": 1, "maxUnavailable": 0}
    # frugal: never a pod more than the service holds GPUs for.
    assert rolling(rollout={"strategy": "frugal"}) == {"maxSurge": 0, "maxUnavailable": 1}


def test_redis_network_policy_admits_only_this_services_server_pods() -> None:
    policy = manifests.redis_network_policy(make(), "tts", "speech")
    assert policy["metadata"]["name"] == "tts-redis"
    assert policy["spec"] == {
        "podSelector": {"matchLabels": {"voicefleet.dev/service": "tts",
                                        "app.kubernetes.io/component": "redis"}},
        "policyTypes": ["Ingress"],
        "ingress": [{
            "from": [{"podSelector": {"matchLabels": {
                "voicefleet.dev/service": "tts", "app.kubernetes.io/component": "server"}}}],
            "ports": [{"protocol": "TCP", "port": 6379}],
        }],
    }
    assert "NetworkPolicy" not in kinds(make(redis={"url": "redis://shared:6379"}))
    valid(policy)


def test_every_child_of_a_full_spec_passes_strict_validation() -> None:
    spec = make(model={"variant": "facebook/mms-tts-eng", "revision": "main", "cache": {}},
                autoscaling={"mode": "none"}, replicas=2, rollout={"strategy": "frugal"},
                resources={"gpuResource": "nvidia.com/mig-1g.10gb"}, pod=POD,
                auth={"apiKeySecretRef": {"name": "keys"}})
    builtin = [c for c in manifests.children(spec, "tts", "ns", redis_image="redis:7")
               if c["kind"] != "ScaledObject"]
    valid(*builtin, cache.claim(spec, "tts", "ns"), cache.fetch_job(spec, "tts", "ns"))
