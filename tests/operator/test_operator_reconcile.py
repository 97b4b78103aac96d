"""The real operator against kmock's emulator: children appear with owners and the spec's
values, status is written, spec changes propagate, deleted or edited children come back."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import kmock as km
import pytest
from operator_helpers import NAMESPACE, ObjectGetter, eventually, voiceservice

from voicefleet import defaults

pytestmark = pytest.mark.timeout(30)

VS = "voicefleet.dev/v1alpha1/voiceservices"
DEPLOYMENTS = "apps/v1/deployments"
CHILDREN = [
    (DEPLOYMENTS, "tts"),
    ("v1/services", "tts"),
    ("autoscaling/v2/horizontalpodautoscalers", "tts"),
    ("policy/v1/poddisruptionbudgets", "tts"),
    (DEPLOYMENTS, "tts-redis"),
    ("v1/services", "tts-redis"),
    ("networking.k8s.io/v1/networkpolicies", "tts-redis"),
    ("v1/secrets", "tts-redis"),
]
VS_PATH = f"/apis/voicefleet.dev/v1alpha1/namespaces/{NAMESPACE}/voiceservices"
Api = Callable[..., Awaitable[Any]]


def env(deployment: dict[str, Any]) -> dict[str, str]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value") for e in container["env"]}


def condition(body: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in body["status"]["conditions"] if c["type"] == type_)


async def test_create_builds_all_children_with_owner(
    operator: km.KubernetesEmulator, api: Api, get_object: ObjectGetter
) -> None:
    body = voiceservice(batching={"windowMs": 25}, vram={"budget": "8Gi"})
    await api("POST", VS_PATH, body)

    for resource, name in CHILDREN:
        child = await eventually(lambda r=resource, n=name: get_object(r, n))
        owners = child["metadata"]["ownerReferences"]
        assert owners == [
            {
                "apiVersion": "voicefleet.dev/v1alpha1",
                "kind": "VoiceService",
                "name": "tts",
                "uid": body["metadata"]["uid"],
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ], (resource, name)
        labels = child["metadata"]["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "voicefleet"
        assert labels["voicefleet.dev/service"] == "tts"

    deployment = get_object(DEPLOYMENTS, "tts")
    values = env(deployment)
    assert values["VOICEFLEET_BATCH_WINDOW_MS"] == "25"
    assert values["VOICEFLEET_VRAM_BUDGET"] == "8Gi"
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "example.test/voicefleet-server:test"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"

    vs = await eventually(lambda: get_object(VS, "tts")["status"]["endpoint"]
                          and get_object(VS, "tts"))
    assert vs["status"]["endpoint"] == "http://tts.default.svc:8000"
    assert vs["status"]["observedGeneration"] == 1
    assert (vs["status"]["replicas"], vs["status"]["readyReplicas"]) == (1, 0)
    assert condition(vs, "Ready")["status"] == "False"
    assert condition(vs, "Degraded")["status"] == "False"
    assert condition(vs, "Progressing")["status"] == "True"
    assert condition(vs, "MemoryPressure")["status"] == "False"
    # Writes are create and merge patch; a PUT would 404 on the emulator and on purpose.
    assert not list(operator["put"])


async def test_spec_update_reaches_the_deployment(
    operator: km.KubernetesEmulator, api: Api, get_object: ObjectGetter
) -> None:
    await api("POST", VS_PATH, voiceservice())
    default_window = str(defaults.BATCH_WINDOW_MS)
    assert await eventually(
        lambda: env(get_object(DEPLOYMENTS, "tts"))["VOICEFLEET_BATCH_WINDOW_MS"]
        == default_window
    )
    await api(
        "PATCH",
        f"{VS_PATH}/tts",
        {"metadata": {"generation": 2},
         "spec": {"batching": {"windowMs": 40}, "autoscaling": {"maxReplicas": 9}}},
        "application/merge-patch+json",
    )
    assert await eventually(
        lambda: env(get_object(DEPLOYMENTS, "tts"))["VOICEFLEET_BATCH_WINDOW_MS"] == "40"
    )
    assert await eventually(
        lambda: get_object("autoscaling/v2/horizontalpodautoscalers", "tts")["spec"][
            "maxReplicas"
        ] == 9
    )
    assert await eventually(lambda: get_object(VS, "tts")["status"]["observedGeneration"] == 2)


async def test_deleted_deployment_comes_back_and_edits_are_reverted(
    operator: km.KubernetesEmulator, api: Api, get_object: ObjectGetter
) -> None:
    await api("POST", VS_PATH, voiceservice())
    assert await eventually(lambda: get_object(DEPLOYMENTS, "tts"))
    await api("DELETE", f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/tts")
    with pytest.raises(KeyError):
        get_object(DEPLOYMENTS, "tts")
    recreated = await eventually(lambda: get_object(DEPLOYMENTS, "tts"))
    assert env(recreated)["VOICEFLEET_MODEL"] == "facebook/mms-tts-eng"

    # A hand edit of a field the operator owns is reverted by the periodic pass.
    await api("PATCH", f"/apis/policy/v1/namespaces/{NAMESPACE}/poddisruptionbudgets/tts",
              {"spec": {"maxUnavailable": 0}}, "application/merge-patch+json")
    assert get_object("policy/v1/poddisruptionbudgets", "tts")["spec"]["maxUnavailable"] == 0
    assert await eventually(
        lambda: get_object("policy/v1/poddisruptionbudgets", "tts")["spec"]["maxUnavailable"] == 1
    )


async def test_ready_replicas_come_from_the_deployment(
    operator: km.KubernetesEmulator, api: Api, get_object: ObjectGetter
) -> None:
    await api("POST", VS_PATH, voiceservice())
    assert await eventually(lambda: get_object(DEPLOYMENTS, "tts"))
    # The emulator runs no controllers: play the HPA's and the Deployment controller's part.
    await api("PATCH", f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/tts",
              {"spec": {"replicas": 2}}, "application/merge-patch+json")
    await api("PATCH", f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/tts/status",
              {"status": {"observedGeneration": 1, "replicas": 2, "readyReplicas": 2,
                          "updatedReplicas": 2}},
              "application/merge-patch+json")
    vs = await eventually(
        lambda: get_object(VS, "tts")["status"]["readyReplicas"] == 2 and get_object(VS, "tts")
    )
    assert condition(vs, "Ready")["status"] == "True"
    assert condition(vs, "Progressing")["reason"] == "Complete"


async def test_invalid_spec_degrades_without_crashing(
    operator: km.KubernetesEmulator, api: Api, get_object: ObjectGetter
) -> None:
    # Slips past a schema-less server: minReplicas > maxReplicas.
    bad = voiceservice(autoscaling={"minReplicas": 5, "maxReplicas": 2})
    await api("POST", VS_PATH, bad)
    vs = await eventually(
        lambda: condition(get_object(VS, "tts"), "Degraded")["status"] == "True"
        and get_object(VS, "tts")
    )
    assert condition(vs, "Degraded")["reason"] == "InvalidSpec"
    assert "minReplicas (5) must not exceed maxReplicas (2)" in condition(vs, "Degraded")["message"]
    assert (DEPLOYMENTS, NAMESPACE, "tts") not in operator.objects

    # Fixing the spec heals it.
    await api("PATCH", f"{VS_PATH}/tts", {"spec": {"autoscaling": {"maxReplicas": 6}}},
              "application/merge-patch+json")
    assert await eventually(lambda: get_object(DEPLOYMENTS, "tts"))
    assert await eventually(
        lambda: condition(get_object(VS, "tts"), "Degraded")["status"] == "False"
    )


async def test_external_redis_creates_no_redis(
    operator: km.KubernetesEmulator, api: Api, get_object: ObjectGetter
) -> None:
    await api("POST", VS_PATH, voiceservice(redis={"url": "redis://shared:6379/1"},
                                            auth={"apiKeySecretRef": {"name": "tts-keys"}}))
    deployment = await eventually(lambda: get_object(DEPLOYMENTS, "tts"))
    assert env(deployment)["VOICEFLEET_REDIS_URL"] == "redis://shared:6379/1"
    # The API key Secret is mounted, never read or copied by the operator.
    assert env(deployment)["VOICEFLEET_API_KEY_FILE"] == "/etc/voicefleet/auth/api-key"
    volumes = deployment["spec"]["template"]["spec"]["volumes"]
    assert {"name": "api-key", "secret": {"secretName": "tts-keys",
                                          "items": [{"key": "api-key", "path": "api-key"}]}
            } in volumes
    assert not [r for r in operator if r.resource is not None
                and r.resource.plural == "secrets" and r.method == "GET"]
    assert await eventually(lambda: get_object("policy/v1/poddisruptionbudgets", "tts"))
    assert (DEPLOYMENTS, NAMESPACE, "tts-redis") not in operator.objects
    assert ("v1/secrets", NAMESPACE, "tts-redis") not in operator.objects
