"""The real operator against kmock's emulator, one scenario per feature of issue 16: the model
cache's claim and Job come before the server and gate it; a changed revision fetches again;
hpa -> none deletes the HPA and `kubectl scale` sizes the Deployment; keda without KEDA is
Degraded (and keeps the HPA), with KEDA it replaces the HPA; the managed Redis is fenced by
a NetworkPolicy. Every API call the operator made in a scenario is one its RBAC grants."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import kmock as km
import pytest
import yaml
from operator_helpers import NAMESPACE, ObjectGetter, eventually, voiceservice

from voicefleet import modelcache

pytestmark = pytest.mark.timeout(120)
# Each step waits for a few reconcile passes; on a loaded machine a pass can take a second.
STEP = 30.0

VS = "voicefleet.dev/v1alpha1/voiceservices"
VS_PATH = f"/apis/voicefleet.dev/v1alpha1/namespaces/{NAMESPACE}/voiceservices"
DEPLOYMENTS = "apps/v1/deployments"
JOBS = "batch/v1/jobs"
CLAIMS = "v1/persistentvolumeclaims"
HPAS = "autoscaling/v2/horizontalpodautoscalers"
SCALED = "keda.sh/v1alpha1/scaledobjects"
MERGE = "application/merge-patch+json"
ROOT = Path(__file__).resolve().parents[2]
RULES = yaml.safe_load((ROOT / "operator" / "rbac" / "clusterrole-rules.yaml").read_text())
VERBS = {"LIST": "list", "WATCH": "watch", "FETCH": "get", "CREATE": "create",
         "UPDATE": "patch", "DELETE": "delete"}
Api = Callable[..., Awaitable[Any]]


async def until(check: Callable[[], Any]) -> Any:
    return await eventually(check, timeout=STEP)


def condition(get_object: ObjectGetter, type_: str) -> dict[str, Any]:
    conditions = (get_object(VS, "tts").get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == type_), {})


def gate_and_server(deployment: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    pod = deployment["spec"]["template"]["spec"]
    (gate,) = pod["initContainers"]
    return gate, pod["containers"][0]


def dir_arg(command: list[str]) -> str:
    return command[command.index("--dir") + 1]


def posted(emulator: km.KubernetesEmulator, plural: str) -> list[int]:
    return [r.id for r in emulator if r.method == "POST" and r.resource is not None
            and r.resource.plural == plural]


def unauthorised(emulator: km.KubernetesEmulator) -> set[tuple[str, str, str]]:
    """(group, resource, verb) of every call our client or kopf made that the operator's
    RBAC rules do not grant (the test's own calls are made without their user agents)."""
    granted = {(g, r, v) for rule in RULES for g in rule["apiGroups"]
               for r in rule["resources"] for v in rule["verbs"]}
    missing = set()
    for request in emulator:
        agent = request.headers.get("User-Agent", "")
        if not agent.startswith(("OpenAPI-Generator", "kopf/")):
            continue
        if request.resource is None or request.resource.plural is None:
            continue  # discovery: open to every authenticated client
        resource = request.resource.plural
        if request.subresource:
            resource = f"{resource}/{request.subresource}"
        verb = VERBS.get(str(request.action.value) if request.action else "", "?")
        if (request.resource.group, resource, verb) not in granted:
            missing.add((request.resource.group, resource, verb))
    return missing


def our_calls(emulator: km.KubernetesEmulator) -> int:
    return sum(1 for r in emulator
               if r.headers.get("User-Agent", "").startswith(("OpenAPI-Generator", "kopf/")))


async def test_the_cache_is_made_before_the_server_and_gates_it(
    operator: km.KubernetesEmulator, api: Api, get_object: ObjectGetter
) -> None:
    await api("POST", VS_PATH, voiceservice(
        model={"variant": "facebook/mms-tts-eng", "revision": "v1", "cache": {"size": "5Gi"}}))
    deployment = await until(lambda: get_object(DEPLOYMENTS, "tts"))
    claim = get_object(CLAIMS, "tts-models")
    job = get_object(JOBS, "tts-model-fetch")
    # Claim and Job exist before the Deployment does: its pods mount one and wait for the other.
    assert max(posted(operator, "persistentvolumeclaims") + posted(operator, "jobs")) < min(
        posted(operator, "deployments"))
    assert claim["spec"]["resources"]["requests"]["storage"] == "5Gi"
    for child in (claim, job):
        assert child["metadata"]["ownerReferences"][0]["kind"] == "VoiceService"
    fetch = job["spec"]["template"]["spec"]["containers"][0]["command"]
    gate, server = gate_and_server(deployment)
    assert gate["command"] == [*fetch, "--wait"]  # waits for exactly what the Job writes
    slot = modelcache.slot_name("facebook/mms-tts-eng", "v1")
    assert dir_arg(fetch) == f"/models/{slot}"
    env = {e["name"]: e.get("value") for e in server["env"]}
    assert (env["HF_HUB_CACHE"], env["HF_HUB_OFFLINE"]) == (f"/models/{slot}", "1")
    volumes = deployment["spec"]["template"]["spec"]["volumes"]
    assert {"name": "models", "persistentVolumeClaim": {"claimName": "tts-models",
                                                        "readOnly": True}} in volumes

    fetching = await until(lambda: condition(get_object, "ModelCached"))
    assert (fetching["status"], fetching["reason"]) == ("False", "Fetching")
    # The Job controller's part: the fetch succeeded.
    await api("PATCH", f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs/tts-model-fetch/status",
              {"status": {"succeeded": 1}}, MERGE)
    cached = await until(lambda: condition(get_object, "ModelCached")["status"] == "True"
                              and condition(get_object, "ModelCached"))
    assert cached["reason"] == "Cached" and slot in cached["message"]
    assert unauthorised(operator) == set() and our_calls(operator) > 0


async def test_a_changed_revision_fetches_again_and_no_cache_removes_the_job(
    operator: km.KubernetesEmulator, api: Api, get_object: ObjectGetter
) -> None:
    await api("POST", VS_PATH, voiceservice(
        model={"variant": "facebook/mms-tts-eng", "revision": "v1", "cache": {}}))
    first = await until(lambda: get_object(JOBS, "tts-model-fetch"))
    await api("PATCH", f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs/tts-model-fetch/status",
              {"status": {"succeeded": 1}}, MERGE)
    assert await until(lambda: condition(get_object, "ModelCached")["status"] == "True")

    await api("PATCH", f"{VS_PATH}/tts", {"metadata": {"generation": 2}, "spec": {
        "model": {"revision": "v2"}}}, MERGE)
    new_dir = f"/models/{modelcache.slot_name('facebook/mms-tts-eng', 'v2')}"
    second = await until(lambda: dir_arg(get_object(JOBS, "tts-model-fetch")["spec"][
        "template"]["spec"]["containers"][0]["command"]) == new_dir
        and get_object(JOBS, "tts-model-fetch"))
    assert "--revision" in (command := second["spec"]["template"]["spec"]["containers"][0][
        "command"]) and command[command.index("--revision") + 1] == "v2"
    assert "status" not in second  # a fresh Job, not the finished one patched
    assert dir_arg(first["spec"]["template"]["spec"]["containers"][0]["command"]) != new_dir
    deletes = [r for r in operator if r.method == "DELETE" and r.resource is not None
               and r.resource.plural == "jobs"]
    assert len(deletes) == 1 and deletes[0].params.get("propagationPolicy") == "Background"
    # New pods wait for the new copy; the claim is the same.
    assert await until(lambda: dir_arg(gate_and_server(get_object(DEPLOYMENTS, "tts"))[0][
        "command"]) == new_dir)
    refetching = await until(lambda: condition(get_object, "ModelCached")["status"]
                                  == "False" and condition(get_object, "ModelCached"))
    assert refetching["reason"] == "Fetching" and "@v2" in refetching["message"]

    # Cache off: the Job goes, the claim (the data) stays, pods load as before.
    await api("PATCH", f"{VS_PATH}/tts", {"spec": {"model": {"cache": None}}}, MERGE)
    assert await until(lambda: (JOBS, NAMESPACE, "tts-model-fetch") not in operator.objects
                            or operator.objects[JOBS, NAMESPACE, "tts-model-fetch"].deleted)
    assert await until(lambda: "initContainers" not in get_object(DEPLOYMENTS, "tts")[
        "spec"]["template"]["spec"])
    assert await until(lambda: condition(get_object, "ModelCached") == {})
    assert get_object(CLAIMS, "tts-models")
    assert unauthorised(operator) == set()


async def test_hpa_to_none_deletes_the_hpa_and_scale_sets_the_replicas(
    operator: km.KubernetesEmulator, api: Api, get_object: ObjectGetter
) -> None:
    await api("POST", VS_PATH, voiceservice())
    assert await until(lambda: get_object(HPAS, "tts"))
    assert "replicas" not in get_object(DEPLOYMENTS, "tts")["spec"]  # the HPA's to set
    vs = await until(lambda: get_object(VS, "tts")["status"].get("selector")
                          and get_object(VS, "tts"))
    assert vs["status"]["selector"] == (
        "app.kubernetes.io/component=server,voicefleet.dev/service=tts")

    await api("PATCH", f"{VS_PATH}/tts", {"spec": {"autoscaling": {"mode": "none"}}}, MERGE)
    assert await until(lambda: (HPAS, NAMESPACE, "tts") not in operator.objects
                            or operator.objects[HPAS, NAMESPACE, "tts"].deleted)
    assert await until(lambda: get_object(DEPLOYMENTS, "tts")["spec"].get("replicas") == 1)
    # `kubectl scale vsvc/tts --replicas=3` writes .spec.replicas through the scale subresource.
    await api("PATCH", f"{VS_PATH}/tts", {"spec": {"replicas": 3}}, MERGE)
    assert await until(lambda: get_object(DEPLOYMENTS, "tts")["spec"]["replicas"] == 3)
    # A hand scale of the Deployment is reverted: the VoiceService owns the count now.
    await api("PATCH", f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/tts",
              {"spec": {"replicas": 7}}, MERGE)
    assert await until(lambda: get_object(DEPLOYMENTS, "tts")["spec"]["replicas"] == 3)
    assert unauthorised(operator) == set()


async def test_keda_without_its_crd_is_degraded_then_replaces_the_hpa(
    operator: km.KubernetesEmulator, api: Api, get_object: ObjectGetter
) -> None:
    await api("POST", VS_PATH, voiceservice())
    assert await until(lambda: get_object(HPAS, "tts"))
    await api("PATCH", f"{VS_PATH}/tts", {"spec": {"autoscaling": {
        "mode": "keda", "prometheusUrl": "http://prometheus.monitoring:9090"}}}, MERGE)
    degraded = await until(lambda: condition(get_object, "Degraded")["status"] == "True"
                                and condition(get_object, "Degraded"))
    assert degraded["reason"] == "KedaMissing" and "install KEDA" in degraded["message"]
    # Without KEDA the HPA keeps scaling: no service is left without an autoscaler.
    assert get_object(HPAS, "tts")

    # KEDA gets installed: the ScaledObject appears, the HPA goes, the service heals.
    operator.resources[SCALED] = km.ResourceInfo(
        kind="ScaledObject", singular="scaledobject", namespaced=True,
        verbs={"get", "list", "watch", "create", "patch", "delete"})
    scaled = await until(lambda: get_object(SCALED, "tts"))
    trigger = scaled["spec"]["triggers"][0]
    assert trigger["metadata"]["serverAddress"] == "http://prometheus.monitoring:9090"
    assert await until(lambda: (HPAS, NAMESPACE, "tts") not in operator.objects
                            or operator.objects[HPAS, NAMESPACE, "tts"].deleted)
    assert await until(lambda: condition(get_object, "Degraded")["status"] == "False")

    # And back: the HPA returns, the ScaledObject goes.
    await api("PATCH", f"{VS_PATH}/tts", {"spec": {"autoscaling": {"mode": "hpa"}}}, MERGE)
    assert await until(lambda: get_object(HPAS, "tts"))
    assert await until(lambda: operator.objects[SCALED, NAMESPACE, "tts"].deleted)
    assert unauthorised(operator) == set()


async def test_frugal_rollout_and_redis_fence(
    operator: km.KubernetesEmulator, api: Api, get_object: ObjectGetter
) -> None:
    await api("POST", VS_PATH, voiceservice(rollout={"strategy": "frugal"}))
    deployment = await until(lambda: get_object(DEPLOYMENTS, "tts"))
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0,
                                                              "maxUnavailable": 1}
    policy = await until(
        lambda: get_object("networking.k8s.io/v1/networkpolicies", "tts-redis"))
    assert policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "redis"
    assert policy["metadata"]["ownerReferences"][0]["name"] == "tts"
    await api("PATCH", f"{VS_PATH}/tts", {"spec": {"rollout": {"strategy": "surge"}}}, MERGE)
    assert await until(lambda: get_object(DEPLOYMENTS, "tts")["spec"]["strategy"][
        "rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0})
    assert unauthorised(operator) == set()
